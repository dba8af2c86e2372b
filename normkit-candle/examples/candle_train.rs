//! A small CNN trained in candle on the 8×8 handwritten digits that ship inside the
//! `smartcore` crate (1,797 images, 10 classes): once with normkit-candle's GroupNorm and
//! BatchNorm, once with candle-nn's own, from the same initial weights. Prints the training
//! loss and the held-out accuracy per epoch, and the time per epoch.
//!
//! ```text
//! cargo run --release -p normkit-candle --example candle_train            # 8 epochs
//! cargo run --release -p normkit-candle --example candle_train -- --quick # a few seconds (CI)
//! ```

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, D};
use candle_nn::{Conv2dConfig, Optimizer, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};

/// The digits as tensors: images `[N, 1, 8, 8]` scaled to [0, 1], labels `[N]`.
struct Split {
    x: Tensor,
    y: Tensor,
}

fn digits(quick: bool) -> Result<(Split, Split)> {
    let ds = smartcore::dataset::digits::load_dataset();
    let n = ds.num_samples;
    let pixels: Vec<f32> = ds.data.iter().map(|p| p / 16.0).collect();
    let labels: Vec<u32> = ds.target.iter().map(|&t| t as u32).collect();
    // A fixed shuffle, then one fifth held out.
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    let (test, train) = order.split_at(n / 5);
    let train = if quick { &train[..256] } else { train };
    let take = |idx: &[usize]| -> Result<Split> {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| pixels[i * 64..(i + 1) * 64].iter().copied())
            .collect();
        let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
        Ok(Split {
            x: Tensor::from_vec(x, (idx.len(), 1, 8, 8), &Device::Cpu)?,
            y: Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
        })
    };
    Ok((take(train)?, take(test)?))
}

/// conv(1→16) → GroupNorm(4 groups) → ReLU → conv(16→32) → BatchNorm → ReLU → 2×2 average
/// pool → linear(512→10).
struct Cnn {
    conv1: candle_nn::Conv2d,
    norm1: Box<dyn ModuleT>,
    conv2: candle_nn::Conv2d,
    norm2: Box<dyn ModuleT>,
    fc: candle_nn::Linear,
}

impl Cnn {
    fn new(vb: VarBuilder<'_>, normkit: bool) -> Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let (norm1, norm2): (Box<dyn ModuleT>, Box<dyn ModuleT>) = if normkit {
            (
                Box::new(normkit_candle::group_norm(4, 16, 1e-5, vb.pp("gn"))?),
                Box::new(normkit_candle::batch_norm(32, 1e-5, vb.pp("bn"))?),
            )
        } else {
            (
                Box::new(candle_nn::group_norm(4, 16, 1e-5, vb.pp("gn"))?),
                Box::new(candle_nn::batch_norm(32, 1e-5, vb.pp("bn"))?),
            )
        };
        Ok(Cnn {
            conv1: candle_nn::conv2d(1, 16, 3, same, vb.pp("conv1"))?,
            norm1,
            conv2: candle_nn::conv2d(16, 32, 3, same, vb.pp("conv2"))?,
            norm2,
            fc: candle_nn::linear(32 * 4 * 4, 10, vb.pp("fc"))?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .norm1
            .forward_t(&self.conv1.forward(x)?, train)?
            .relu()?;
        let h = self
            .norm2
            .forward_t(&self.conv2.forward(&h)?, train)?
            .relu()?;
        let h = h.avg_pool2d(2)?.flatten_from(1)?;
        self.fc.forward(&h)
    }
}

struct Run {
    name: &'static str,
    map: VarMap,
    model: Cnn,
    opt: candle_nn::AdamW,
}

fn accuracy(model: &Cnn, data: &Split) -> Result<f64> {
    let pred = model.forward(&data.x, false)?.argmax(D::Minus1)?;
    let hits = pred.eq(&data.y)?.to_dtype(DType::F32)?.sum_all()?;
    Ok(hits.to_scalar::<f32>()? as f64 / data.y.dim(0)? as f64)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let epochs = if quick { 1 } else { 8 };
    let batch = 64;
    let (train, test) = digits(quick)?;
    let n = train.y.dim(0)?;
    println!(
        "digits: {n} training images, {} held out; {epochs} epoch(s), batch {batch}, AdamW",
        test.y.dim(0)?
    );

    let mut runs = Vec::new();
    for (name, normkit) in [("normkit-candle", true), ("candle-nn", false)] {
        let map = VarMap::new();
        let model = Cnn::new(
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
            normkit,
        )?;
        runs.push((name, map, model));
    }
    // The same initial weights in both models.
    let init: HashMap<String, Tensor> = runs[0]
        .1
        .data()
        .lock()
        .map_err(|_| candle_core::Error::msg("poisoned"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    for (_, map, _) in &runs[1..] {
        let vars = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::msg("poisoned"))?;
        for (k, v) in vars.iter() {
            if let Some(t) = init.get(k) {
                v.set(t)?;
            }
        }
    }
    let params = candle_nn::ParamsAdamW {
        lr: 3e-3,
        ..Default::default()
    };
    let mut runs: Vec<Run> = runs
        .into_iter()
        .map(|(name, map, model)| {
            let opt = candle_nn::AdamW::new(map.all_vars(), params.clone())?;
            Ok(Run {
                name,
                map,
                model,
                opt,
            })
        })
        .collect::<Result<_>>()?;

    let batches = n.div_ceil(batch);
    let bar = ProgressBar::new((epochs * batches * runs.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("  [{bar:40}] {pos}/{len} batches  {elapsed_precise}")
            .map_err(candle_core::Error::wrap)?,
    );
    for epoch in 1..=epochs {
        for run in runs.iter_mut() {
            let start = Instant::now();
            let mut total = 0.0;
            for b in 0..batches {
                let len = batch.min(n - b * batch);
                let x = train.x.narrow(0, b * batch, len)?;
                let y = train.y.narrow(0, b * batch, len)?;
                let logits = run.model.forward(&x, true)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
                run.opt.backward_step(&loss)?;
                total += loss.to_scalar::<f32>()? as f64 * len as f64;
                bar.inc(1);
            }
            let acc = accuracy(&run.model, &test)?;
            let line = format!(
                "epoch {epoch:>2}  {:<15} loss {:.4}  held-out accuracy {:5.1}%  {:6.0} ms",
                run.name,
                total / n as f64,
                100.0 * acc,
                start.elapsed().as_secs_f64() * 1e3
            );
            // Without a terminal the bar is hidden and so is its println.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
    }
    bar.finish_and_clear();
    let names: usize = runs.iter().map(|r| r.map.all_vars().len()).sum();
    println!("done ({names} variables in all; normkit's under PyTorch names: gn.weight, bn.running_mean, …)");
    Ok(())
}
