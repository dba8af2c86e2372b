//! A private layer in a binary crate that denies warnings, using only one of its methods:
//! the generated methods it does not call raise no `dead_code` warning.
#![deny(warnings)]

use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine)]
struct GroupNorm2;

fn main() {
    let mut gn = GroupNorm2::<f32>::new(4);
    let x = Array4::<f32>::zeros((1, 4, 2, 2));
    let _ = gn.forward_train(x.view());
}
