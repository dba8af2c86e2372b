use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "D", affine = "E")]
struct Layer;

fn main() {}
