use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "N,H,W", running_stats, momentum = 1.5)]
struct Layer;

fn main() {}
