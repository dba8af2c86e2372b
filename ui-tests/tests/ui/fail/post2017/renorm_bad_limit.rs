use normkit::prelude::*;

#[norm(input = "N,C", axes = "N", running_stats, renorm(rmax = 0.5, dmax = 5.0))]
struct Layer;

fn main() {}
