use normkit::prelude::*;

#[norm(
    input = "N,C,T",
    mask = "N,T",
    chain(bn(axes = "N,T"), ln(axes = "C,T"))
)]
struct MaskedChain;

fn main() {}
