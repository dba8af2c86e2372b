use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", eps = 1e999)]
struct Layer;

fn main() {}
