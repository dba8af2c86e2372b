use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", affine = "G")]
struct Layer;

fn main() {}
