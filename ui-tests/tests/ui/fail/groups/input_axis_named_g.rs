use normkit::prelude::*;

#[norm(input = "N,C,G,W", axes = "C,G,W", groups = 2)]
struct Layer;

fn main() {}
