use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", affine = external, bias = false)]
struct Layer;

fn main() {}
