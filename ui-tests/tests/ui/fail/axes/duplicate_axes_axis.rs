use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,H")]
struct Layer;

fn main() {}
