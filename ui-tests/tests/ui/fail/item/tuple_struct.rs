use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", affine)]
struct Layer(u32);

fn main() {}
