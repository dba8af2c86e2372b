use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W" | "N,H,W" | "W" | "H", affine)]
struct Layer;

fn main() {}
