use normkit::prelude::*;

#[norm(input = "N,C,H,W", chain(bn(affine), gn(axes = "C,H,W", groups = 2)))]
struct Layer;

fn main() {}
