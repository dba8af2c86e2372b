use normkit::prelude::*;

#[norm(input = "N,C,H,W", chain())]
struct Layer;

fn main() {}
