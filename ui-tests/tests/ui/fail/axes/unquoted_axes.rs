use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = C, H, W)]
struct Layer;

fn main() {}
