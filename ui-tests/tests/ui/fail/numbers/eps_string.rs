use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", eps = "1e-5")]
struct Layer;

fn main() {}
