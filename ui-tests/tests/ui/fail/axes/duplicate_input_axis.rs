use normkit::prelude::*;

#[norm(input = "N,C,H,C", axes = "C,H")]
struct Layer;

fn main() {}
