use normkit::prelude::*;

#[norm(axes = "C,H,W", eps = 1e-5, eps = 1e-3)]
struct Layer;

fn main() {}
