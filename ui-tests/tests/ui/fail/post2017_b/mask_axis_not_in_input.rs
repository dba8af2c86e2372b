use normkit::prelude::*;

#[norm(input = "N,T,D", axes = "T,D", mask = "N,S")]
struct PaddedLayerNorm;

fn main() {}
