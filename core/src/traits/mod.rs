//! The four extension traits. Each file holds one trait with a one-page explanation and an
//! example plugin; `quant_export.rs` holds the export description a [`Quantizer`] may return.

pub mod backbone;
pub mod cost;
pub mod quant_export;
pub mod quantizer;
pub mod relaxation;

pub use backbone::{Backbone, InputSpec};
pub use cost::{BitDistribution, ComplexityCost, CostSummary, LayerBits};
pub use quant_export::{QuantExport, Rounding, UniformQuant};
pub use quantizer::{Operand, QuantParam, Quantizer};
pub use relaxation::{RelaxContext, Relaxation};
