use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,X", affine)]
struct Layer;

fn main() {}
