use normkit::prelude::*;

#[norm(input = "N,C,H,W", chain(sn(axes = "H,W" | "C,H,W", affine), gn(axes = "C,H,W", groups = 2)))]
struct Layer;

fn main() {}
