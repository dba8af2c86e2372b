use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", affine = externl)]
struct Layer;

fn main() {}
