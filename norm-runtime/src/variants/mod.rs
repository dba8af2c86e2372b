//! The post-2017 variants of issue 18 that change a stage's forward and backward beyond
//! its statistics: Ghost Batch Norm ([`ghost`](crate::stage::ghost), a child of `stage`
//! whose plain passes it runs per chunk: chunks of the batch, each with its own
//! statistics) and FRN's thresholded linear unit ([`tlu`]: y = max(z, τ)) and Batch Renormalization
//! ([`renorm`]: r and d from the running statistics) and Switchable Normalization
//! ([`switchable`]: softmax-weighted mixtures of several alternatives' statistics). `statistic =
//! "sum"` only changes the estimator (`crate::stats`). Stages with any of them run
//! stage by stage, never on the fused chain path.

pub(crate) mod renorm;
pub(crate) mod switchable;
pub(crate) mod tlu;

use norm_spec::{Stage, Statistic};

/// Whether the stage uses a variant the fused chain path does not implement.
pub(crate) fn unfusable(stage: &Stage) -> bool {
    stage.statistic == Statistic::Sum
        || stage.tlu
        || stage.ghost.is_some()
        || stage.renorm.is_some()
        || !stage.switch.is_empty()
}
