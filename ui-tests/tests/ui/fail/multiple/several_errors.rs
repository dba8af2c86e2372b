use normkit::prelude::*;

#[norm(
    input = "N,C,H,W",
    axes = "C,H,X",
    groups = 0,
    eps = -1.0,
    momentum = 0.5,
    biass = false,
)]
struct Layer;

fn main() {}
