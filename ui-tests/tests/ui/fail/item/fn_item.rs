use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W")]
fn layer() {}

fn main() {}
