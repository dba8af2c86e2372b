use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W" | "N,C,H,W", affine, running_stats)]
struct Layer;

fn main() {}
