use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W", ghost = 0)]
struct Layer;

fn main() {}
