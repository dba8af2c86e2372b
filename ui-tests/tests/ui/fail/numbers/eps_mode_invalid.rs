use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", eps_mode = "sd")]
struct Layer;

fn main() {}
