use normkit::prelude::*;

#[norm(input = "N,C,H,W", axis = "C,H,W")]
struct Layer;

fn main() {}
