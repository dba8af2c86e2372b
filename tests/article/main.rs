//! The `article` example's tests, one binary: the example's modules (its own layers,
//! models, data, transforms, verdicts, protocol) compiled once for both test modules.
//!
//! * `article_nn`: gradient checks of the example's layers and networks.
//! * `article_tour`: the tour's transforms, verdict logic and pre-registered claims.

#[allow(dead_code)]
#[path = "../../examples/article/nn.rs"]
mod nn;

#[allow(dead_code)]
#[path = "../../examples/article/data.rs"]
mod data;

#[allow(dead_code)]
#[path = "../../examples/article/model.rs"]
mod model;

#[allow(dead_code)]
#[path = "../../examples/article/norms.rs"]
mod norms;

#[allow(dead_code)]
#[path = "../../examples/article/mlp.rs"]
mod mlp;

#[allow(dead_code)]
#[path = "../../examples/article/hard_digits.rs"]
mod hard_digits;

#[allow(dead_code)]
#[path = "../../examples/article/verdict.rs"]
mod verdict;

#[allow(dead_code)]
#[path = "../../examples/article/protocol.rs"]
mod protocol;

mod article_nn;
mod article_tour;
