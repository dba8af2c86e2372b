use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,X")]
struct Layer;

fn main() {}
