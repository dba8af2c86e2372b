use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W", affine = external)]
struct Layer;

fn main() {}
