use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", bias = false)]
struct Layer;

fn main() {}
