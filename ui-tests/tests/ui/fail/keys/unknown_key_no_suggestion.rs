use normkit::prelude::*;

#[norm(axes = "C,H,W", frobnicate = 3)]
struct Layer;

fn main() {}
