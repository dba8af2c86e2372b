use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W", affine, running_stats)]
struct Layer;

fn main() {}
