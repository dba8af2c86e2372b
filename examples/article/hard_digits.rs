//! Harder digits, generated in code from the 8×8 digits that ship with
//! `smartcore` (nothing is downloaded).
//!
//! On the clean digits every network of the tour sits at 96–98 % held-out
//! accuracy, so no normalizer can be told apart from another. Here every image
//! (training and held-out alike) is redrawn once, deterministically:
//!
//! 1. a random similarity transform about the image centre (3.5, 3.5):
//!    rotation by an angle uniform in ±[`Difficulty::max_angle_deg`], scaling
//!    by a factor uniform in 1 ± [`Difficulty::max_scale`], translation by an
//!    offset uniform in ±[`Difficulty::max_shift`] pixels along each axis;
//!    resampled by bilinear interpolation, zero outside the image;
//! 2. additive Gaussian pixel noise with standard deviation
//!    [`Difficulty::noise_sd`] (pixel values are in [0, 1], not clipped);
//! 3. only [`Difficulty::n_train`] images are kept for training; every other
//!    image is held out.
//!
//! The random numbers of image `i` of a split come from their own generator,
//! seeded by the data seed, the split and `i`, so an image's transform does
//! not depend on how many images precede it or on the thread that draws it.

use ndarray::{s, Array2, Array4, ArrayView2, Axis};

use crate::data::{self, Digits};
use crate::nn::Rng;

/// How the digits are made harder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Difficulty {
    /// Largest rotation, in degrees (uniform in ±this).
    pub max_angle_deg: f64,
    /// Largest relative change of size (scale uniform in 1 ± this).
    pub max_scale: f64,
    /// Largest translation per axis, in pixels (uniform in ±this).
    pub max_shift: f64,
    /// Standard deviation of the additive Gaussian pixel noise.
    pub noise_sd: f64,
    /// Images kept for training (the rest of the 1,797 are held out).
    pub n_train: usize,
}

/// One similarity transform of an 8×8 image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Counter-clockwise rotation, in degrees.
    pub angle_deg: f64,
    /// Scale factor (> 1 enlarges the digit).
    pub scale: f64,
    /// Translation `(dx, dy)` in pixels (positive: right, down).
    pub shift: (f64, f64),
}

impl Transform {
    /// The identity (used by `tests/article/article_tour.rs`).
    #[allow(dead_code)]
    pub const IDENTITY: Transform = Transform {
        angle_deg: 0.0,
        scale: 1.0,
        shift: (0.0, 0.0),
    };

    /// A random transform within `d`.
    pub fn random(rng: &mut Rng, d: &Difficulty) -> Self {
        let mut sym = |a: f64| (2.0 * rng.uniform() - 1.0) * a;
        let angle_deg = sym(d.max_angle_deg);
        let scale = 1.0 + sym(d.max_scale);
        let shift = (sym(d.max_shift), sym(d.max_shift));
        Transform {
            angle_deg,
            scale,
            shift,
        }
    }
}

/// Bilinear sample of `img` at `(x, y)` (column, row), zero outside.
fn sample(img: ArrayView2<'_, f32>, x: f64, y: f64) -> f64 {
    let (h, w) = img.dim();
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |yy: f64, xx: f64| -> f64 {
        if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
            0.0
        } else {
            f64::from(img[[yy as usize, xx as usize]])
        }
    };
    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1.0))
        + fy * ((1.0 - fx) * at(y0 + 1.0, x0) + fx * at(y0 + 1.0, x0 + 1.0))
}

/// Applies `t` to a square image: each output pixel `p` takes the input's
/// bilinear value at `c + R(−θ)(p − c − shift)/scale`, `c` the image centre.
pub fn warp(img: ArrayView2<'_, f32>, t: &Transform) -> Array2<f32> {
    let (h, w) = img.dim();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (sin, cos) = t.angle_deg.to_radians().sin_cos();
    Array2::from_shape_fn((h, w), |(y, x)| {
        let (px, py) = (x as f64 - cx - t.shift.0, y as f64 - cy - t.shift.1);
        // Rows grow downwards, so the matrix [[cos, −sin], [sin, cos]] turns
        // (x, y) clockwise on screen; sampling the input there turns the
        // content counter-clockwise.
        let sx = (cos * px - sin * py) / t.scale + cx;
        let sy = (sin * px + cos * py) / t.scale + cy;
        sample(img, sx, sy) as f32
    })
}

/// The generator of image `index` of split `split` (0 training, 1 held-out).
pub fn image_rng(seed: u64, split: u64, index: usize) -> Rng {
    Rng::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ split.wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F),
    )
}

/// Transforms and adds noise to every image of `x` (`N,1,8,8`), image `i`
/// with [`image_rng`]`(seed, split, i)`.
pub fn harden(x: &Array4<f32>, d: &Difficulty, seed: u64, split: u64) -> Array4<f32> {
    let mut out = Array4::<f32>::zeros(x.raw_dim());
    for (i, (src, mut dst)) in x
        .axis_iter(Axis(0))
        .zip(out.axis_iter_mut(Axis(0)))
        .enumerate()
    {
        let mut rng = image_rng(seed, split, i);
        let t = Transform::random(&mut rng, d);
        let img = warp(src.slice(s![0, .., ..]), &t);
        for (o, &v) in dst.iter_mut().zip(img.iter()) {
            *o = v + (d.noise_sd * rng.normal()) as f32;
        }
    }
    out
}

/// The hard digits: the tour's split of the 8×8 digits (seed `split_seed`),
/// the first `d.n_train` shuffled images for training and all the others
/// held out, each image hardened with the data seed `seed`.
pub fn load(split_seed: u64, seed: u64, d: &Difficulty) -> Digits {
    let clean = data::digits(split_seed);
    let all_x = ndarray::concatenate![Axis(0), clean.train_x, clean.test_x];
    let all_y: Vec<usize> = clean.train_y.iter().chain(&clean.test_y).copied().collect();
    let n_train = d.n_train.min(all_y.len() - 1);
    let (train_x, test_x) = (
        all_x.slice(s![..n_train, .., .., ..]).to_owned(),
        all_x.slice(s![n_train.., .., .., ..]).to_owned(),
    );
    Digits {
        train_x: harden(&train_x, d, seed, 0),
        train_y: all_y[..n_train].to_vec(),
        test_x: harden(&test_x, d, seed, 1),
        test_y: all_y[n_train..].to_vec(),
    }
}
