use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", eps = -1.0)]
struct Layer<T>(T);

fn main() {}
