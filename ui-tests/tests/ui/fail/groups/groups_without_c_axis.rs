use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "D", groups = 2)]
struct Layer;

fn main() {}
