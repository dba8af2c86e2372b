use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "")]
struct Layer;

fn main() {}
