use normkit::prelude::*;

#[norm(input = "N,C,H,W", affine)]
struct Layer;

fn main() {}
