use normkit::prelude::*;

#[norm(input = "N,L,D", axes = "N,L", center = false, running_stats)]
struct Layer;

fn main() {}
