use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "D", affine)]
struct Layer;

fn main() {}
