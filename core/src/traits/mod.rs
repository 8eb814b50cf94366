//! The four extension traits. Each file holds one trait with a one-page explanation and an
//! example plugin.

pub mod backbone;
pub mod cost;
pub mod quantizer;
pub mod relaxation;

pub use backbone::{Backbone, InputSpec};
pub use cost::{BitDistribution, ComplexityCost, CostSummary, LayerBits};
pub use quantizer::{Operand, QuantParam, Quantizer};
pub use relaxation::{RelaxContext, Relaxation};
