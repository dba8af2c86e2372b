use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", center = false, tlu, eps = 1e-6)]
struct Layer;

fn main() {}
