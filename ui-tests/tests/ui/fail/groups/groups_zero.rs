use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 0)]
struct Layer;

fn main() {}
