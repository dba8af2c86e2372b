use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "H,W", groups = 2)]
struct Layer;

fn main() {}
