use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "", affine)]
struct Layer;

fn main() {}
