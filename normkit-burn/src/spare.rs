//! Spare buffers: the memory of gradients the fused backward consumed, kept for the next
//! fused output of the same size instead of a fresh allocation.
//!
//! A fresh input-sized buffer is costly beside normkit's kernels: above glibc's mmap
//! threshold (32 MiB) it comes from the kernel and is mapped page by page on first write;
//! below it, `calloc` zero-fills memory the kernel then overwrites. burn hands the fused
//! backward its upstream gradient by value (`Gradients::consume`); when that tensor owns its
//! memory alone (the seed of `backward()`, or a gradient no other node holds), its `Vec` is
//! put here and the layer's next forward writes its output into it. Every element of a
//! normalization's output is written by the kernels, so what the buffer held is never read.
//!
//! A layer keeps at most [`MAX_SPARE`] buffers per element type (in steady training it holds
//! one, between a backward and the next forward), shared by the layer's clones.

use std::sync::Mutex;

use burn::backend::flex::FlexTensor;
use burn::backend::TensorMetadata;

/// The most buffers a layer keeps per element type.
pub(crate) const MAX_SPARE: usize = 2;

/// A layer's spare buffers, by element type.
#[derive(Default)]
pub(crate) struct Spare {
    f32: Mutex<Vec<Vec<f32>>>,
    f64: Mutex<Vec<Vec<f64>>>,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |m: &Mutex<Vec<Vec<f32>>>| m.lock().map_or(0, |v| v.len());
        let count64 = |m: &Mutex<Vec<Vec<f64>>>| m.lock().map_or(0, |v| v.len());
        f.debug_struct("Spare")
            .field("f32", &count(&self.f32))
            .field("f64", &count64(&self.f64))
            .finish()
    }
}

/// The element types with a pool in [`Spare`].
pub(crate) trait Pooled: normkit::Float + burn::tensor::Element {
    fn pool(s: &Spare) -> &Mutex<Vec<Vec<Self>>>;
}

impl Pooled for f32 {
    fn pool(s: &Spare) -> &Mutex<Vec<Vec<f32>>> {
        &s.f32
    }
}

impl Pooled for f64 {
    fn pool(s: &Spare) -> &Mutex<Vec<Vec<f64>>> {
        &s.f64
    }
}

impl Spare {
    /// A buffer of `n` values whose contents the caller overwrites: a spare one of that
    /// length if there is one, else a fresh zeroed one (`normkit::alloc::zeroed_vec`).
    pub(crate) fn take<T: Pooled>(&self, n: usize) -> Vec<T> {
        if let Ok(mut pool) = T::pool(self).lock() {
            if let Some(k) = pool.iter().position(|v| v.len() == n) {
                return pool.swap_remove(k);
            }
        }
        normkit::alloc::zeroed_vec(n)
    }

    /// Keeps `v` for a later [`Spare::take`] (dropped when the layer holds enough).
    pub(crate) fn give<T: Pooled>(&self, v: Vec<T>) {
        if v.is_empty() {
            return;
        }
        if let Ok(mut pool) = T::pool(self).lock() {
            if pool.len() < MAX_SPARE {
                pool.push(v);
            }
        }
    }

    /// Keeps the memory of `t` if `t` owns it alone, holds exactly its values (contiguous,
    /// from offset 0) in element type `T`, and was allocated as a `Vec<T>`; never copies.
    pub(crate) fn recycle<T: Pooled>(&self, t: FlexTensor) {
        let n = t.shape().num_elements();
        let exact = t.bytes().len() == n * std::mem::size_of::<T>();
        let plain = t.is_contiguous() && t.layout().start_offset() == 0;
        if !t.is_unique() || !exact || !plain || t.dtype() != <T as burn::tensor::Element>::dtype()
        {
            return;
        }
        // Unique, contiguous from 0 and exactly sized: `into_data` moves the bytes out.
        let (bytes, _, _) = t.into_data().into_parts();
        if let Ok(v) = bytes.try_into_vec::<T>() {
            self.give(v);
        }
    }

    /// How many buffers of element type `T` are kept (for tests).
    #[cfg(test)]
    pub(crate) fn len<T: Pooled>(&self) -> usize {
        T::pool(self).lock().map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn recycled_memory_is_the_tensors_and_is_reused_by_length() {
        let spare = Spare::default();
        let v: Vec<f32> = (0..1000).map(|k| k as f32).collect();
        let addr = v.as_ptr() as usize;
        spare.recycle::<f32>(FlexTensor::from_data(TensorData::new(v, vec![10, 100])));
        assert_eq!(spare.len::<f32>(), 1);
        // Another length: a fresh zeroed buffer, the spare one stays.
        let other: Vec<f32> = spare.take(999);
        assert!(other.iter().all(|&x| x == 0.0));
        assert_eq!(spare.len::<f32>(), 1);
        // The same length: the very memory given back, no copy.
        let again: Vec<f32> = spare.take(1000);
        assert_eq!(again.as_ptr() as usize, addr);
        assert_eq!(again[999], 999.0);
        assert_eq!(spare.len::<f32>(), 0);
    }

    #[test]
    fn shared_or_strided_tensors_are_not_taken() {
        let spare = Spare::default();
        let t = FlexTensor::from_data(TensorData::new(vec![1.0f32; 12], vec![3, 4]));
        let keep = t.clone();
        spare.recycle::<f32>(t);
        assert_eq!(
            spare.len::<f32>(),
            0,
            "shared memory stays with its other owner"
        );
        drop(keep);
        let t =
            FlexTensor::from_data(TensorData::new(vec![1.0f32; 12], vec![3, 4])).transpose(0, 1);
        assert!(t.is_unique());
        spare.recycle::<f32>(t);
        assert_eq!(
            spare.len::<f32>(),
            0,
            "a transposed view is not a plain buffer"
        );
        // The wrong element type is refused.
        spare.recycle::<f64>(FlexTensor::from_data(TensorData::new(
            vec![1.0f32; 12],
            vec![12],
        )));
        assert_eq!(spare.len::<f64>(), 0);
        // At most MAX_SPARE are kept.
        for _ in 0..MAX_SPARE + 2 {
            spare.recycle::<f32>(FlexTensor::from_data(TensorData::new(
                vec![0.5f32; 8],
                vec![8],
            )));
        }
        assert_eq!(spare.len::<f32>(), MAX_SPARE);
    }
}
