use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | "C,H,W", groups = 2, affine, unbiased, center = false, eps_mode = "std", statistic = "sum")]
struct Layer;

fn main() {}
