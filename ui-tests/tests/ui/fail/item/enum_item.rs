use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W")]
enum Layer {
    A,
}

fn main() {}
