use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", ghost = 4)]
struct Layer;

fn main() {}
