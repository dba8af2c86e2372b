use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", affine = "N,C")]
struct Layer;

fn main() {}
