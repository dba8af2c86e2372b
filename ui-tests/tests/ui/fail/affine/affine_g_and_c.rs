use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2, affine = "G,C")]
struct Layer;

fn main() {}
