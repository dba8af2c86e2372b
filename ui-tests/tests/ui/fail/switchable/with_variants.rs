use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W" | "C,H,W", affine, tlu, ghost = 4, running_stats, renorm, mask = "N")]
struct Layer;

fn main() {}
