use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W" | C, affine)]
struct Layer;

fn main() {}
