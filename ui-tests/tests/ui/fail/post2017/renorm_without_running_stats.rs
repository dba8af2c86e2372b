use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W", affine, renorm(rmax = 3.0, dmax = 5.0))]
struct Layer;

fn main() {}
