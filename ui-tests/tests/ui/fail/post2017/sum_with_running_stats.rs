use normkit::prelude::*;

#[norm(input = "N,C", axes = "N", statistic = "sum", running_stats)]
struct Layer;

fn main() {}
