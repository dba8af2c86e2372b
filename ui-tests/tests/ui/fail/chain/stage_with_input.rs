use normkit::prelude::*;

#[norm(
    input = "N,C,H,W",
    chain(bn(input = "N,C", axes = "N,H,W"), gn(axes = "C,H,W", groups = 2))
)]
struct Layer;

fn main() {}
