use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "D", center = false, unbiased)]
struct Layer;

fn main() {}
