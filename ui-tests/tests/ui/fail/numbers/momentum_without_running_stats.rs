use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W", momentum = 0.1)]
struct Layer;

fn main() {}
