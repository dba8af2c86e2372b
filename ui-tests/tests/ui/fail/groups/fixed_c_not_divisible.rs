use normkit::prelude::*;

#[norm(input = "N,C=48,H,W", axes = "C,H,W", groups = 32)]
struct Layer;

fn main() {}
