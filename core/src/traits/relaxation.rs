//! The [`Relaxation`] trait: turns per-layer architecture logits into differentiable mixing
//! weights during search, and into a discrete choice at the end.
//!
//! EdMIPS uses `softmax`: logits start at 0.01 (uniform), the weights are `softmax(logits)`,
//! and the final pick is the argmax with ties to the first index (D9).
//!
//! # Example
//!
//! ```
//! use edmips_core::candle::{Device, Tensor};
//! use edmips_core::{Relaxation, RelaxContext, Result};
//!
//! /// Uniform mixing whatever the logits: a baseline that never learns.
//! #[derive(Debug)]
//! struct Uniform;
//! impl Relaxation for Uniform {
//!     fn id(&self) -> &str { "uniform" }
//!     fn init_logits(&self, n: usize) -> Vec<f32> { vec![0.0; n] }
//!     fn weights(&self, logits: &Tensor, _ctx: &RelaxContext) -> Result<Tensor> {
//!         let n = logits.dim(0)? as f64;
//!         Ok(((logits.zeros_like()? + 1.0 / n)?))
//!     }
//! }
//! let w = Uniform.weights(&Tensor::new(&[3f32, 1.0], &Device::Cpu).unwrap(), &RelaxContext::default()).unwrap();
//! assert_eq!(w.to_vec1::<f32>().unwrap(), vec![0.5, 0.5]);
//! assert_eq!(Uniform.pick(&[0.1, 0.3, 0.3]), 1);
//! ```

use std::fmt;

use candle_core::Tensor;

use crate::error::Result;

/// What a relaxation may depend on besides the logits.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RelaxContext {
    /// Whether the network is in training mode.
    pub training: bool,
    /// The current epoch (0-based).
    pub epoch: usize,
    /// The global step (0-based).
    pub step: u64,
    /// The run seed. A stochastic relaxation (Gumbel) derives its noise from
    /// `(seed, step, stream)`, so a resumed run draws the same noise.
    pub seed: u64,
    /// Which logits vector is being relaxed: `2 · layer` for a layer's activation bits,
    /// `2 · layer + 1` for its weight bits (set by the searchable layer), so a stochastic
    /// relaxation draws independent noise for each.
    pub stream: u64,
}

impl RelaxContext {
    /// The context of training step `step` (global, 0-based) in `epoch` of a run seeded `seed`.
    pub fn train(epoch: usize, step: u64, seed: u64) -> Self {
        RelaxContext { training: true, epoch, step, seed, stream: 0 }
    }

    /// This context for logits vector `stream` (see [`RelaxContext::stream`]).
    pub fn for_stream(&self, stream: u64) -> Self {
        RelaxContext { stream, ..self.clone() }
    }

    /// The context of an evaluation pass (validation, inspection).
    pub fn eval() -> Self {
        RelaxContext::default()
    }
}

/// A search relaxation plugin. See the [module docs](self) for an example.
pub trait Relaxation: Send + Sync + fmt::Debug {
    /// The registry id.
    fn id(&self) -> &str;

    /// The initial logits for `n` candidates.
    fn init_logits(&self, n: usize) -> Vec<f32>;

    /// Differentiable mixing weights (rank 1, same length as `logits`, summing to 1).
    fn weights(&self, logits: &Tensor, ctx: &RelaxContext) -> Result<Tensor>;

    /// The discrete choice: by default the argmax, first index on ties.
    fn pick(&self, logits: &[f32]) -> usize {
        argmax_first(logits)
    }
}

/// Index of the largest value, the first one on ties (NaN never wins).
pub fn argmax_first(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || (v[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best
}
