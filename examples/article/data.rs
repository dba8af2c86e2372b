//! The two real data sets of the tour, both shipped inside crates (nothing is
//! downloaded at run time):
//!
//! - red-wine quality (1,599 wines, 11 physico-chemical features on very
//!   different scales) from `linfa-datasets`;
//! - handwritten digits (1,797 8×8 images, 10 classes) from `smartcore`.

use ndarray::{Array1, Array2, Array4, Axis};

use crate::nn::Rng;

/// The red-wine-quality regression data.
pub struct Wine {
    /// Features, one row per wine.
    pub x: Array2<f64>,
    /// Quality score (0–10) given by tasters.
    pub y: Array1<f64>,
    /// Feature names.
    pub names: Vec<&'static str>,
}

/// Loads the red-wine-quality data (`linfa-datasets`, feature `winequality`).
pub fn wine() -> Wine {
    let ds = linfa_datasets::winequality();
    // linfa uses its own ndarray version: copy through plain vectors.
    let (rows, cols) = (ds.records.nrows(), ds.records.ncols());
    let x: Vec<f64> = ds.records.iter().copied().collect();
    let y: Vec<f64> = ds.targets.iter().map(|&q| q as f64).collect();
    Wine {
        x: Array2::from_shape_vec((rows, cols), x).expect("rows × cols values"),
        y: Array1::from(y),
        names: vec![
            "fixed acidity",
            "volatile acidity",
            "citric acid",
            "residual sugar",
            "chlorides",
            "free sulfur dioxide",
            "total sulfur dioxide",
            "density",
            "pH",
            "sulphates",
            "alcohol",
        ],
    }
}

/// Digits split into a training and a held-out test set.
pub struct Digits {
    /// Training images `N,1,8,8`, pixel values scaled to [0, 1].
    pub train_x: Array4<f32>,
    /// Training labels.
    pub train_y: Vec<usize>,
    /// Held-out images.
    pub test_x: Array4<f32>,
    /// Held-out labels.
    pub test_y: Vec<usize>,
}

/// Loads the digits (`smartcore`, feature `datasets`) and splits off a
/// random fifth as the held-out set.
pub fn digits(split_seed: u64) -> Digits {
    let ds = smartcore::dataset::digits::load_dataset();
    let n = ds.num_samples;
    assert_eq!(ds.num_features, 64, "8×8 images");
    let x = Array4::from_shape_vec((n, 1, 8, 8), ds.data).expect("n × 64 pixels") / 16.0;
    let y: Vec<usize> = ds.target.iter().map(|&t| t as usize).collect();
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(split_seed ^ 0xD1_6175).shuffle(&mut order);
    let n_test = n / 5;
    let (test, train) = order.split_at(n_test);
    Digits {
        train_x: x.select(Axis(0), train),
        train_y: train.iter().map(|&i| y[i]).collect(),
        test_x: x.select(Axis(0), test),
        test_y: test.iter().map(|&i| y[i]).collect(),
    }
}
