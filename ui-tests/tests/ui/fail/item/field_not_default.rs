use normkit::prelude::*;

struct NoDefault;

#[norm(input = "N,C,H,W", axes = "C,H,W", affine)]
struct Layer {
    extra: NoDefault,
}

fn main() {}
