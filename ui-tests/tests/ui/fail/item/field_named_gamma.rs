use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", affine)]
struct Layer {
    gamma: f32,
}

fn main() {}
