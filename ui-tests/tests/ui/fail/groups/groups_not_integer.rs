use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 2.5)]
struct Layer;

fn main() {}
