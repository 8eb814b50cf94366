//! # edmips-plugins
//!
//! The EdMIPS plugins, each in its own file and registered through the same macros a
//! third-party crate uses:
//!
//! | kind | id | file |
//! |---|---|---|
//! | quantizer (activations) | `hwgq` | [`quant::hwgq`] |
//! | quantizer (weights) | `gauss` | [`quant::gauss`] |
//! | quantizer (weights) | `dorefa` | [`quant::dorefa`] |
//! | quantizer (both, learnable step) | `lsq` | [`quant::lsq`] |
//! | quantizer (activations, learnable clip) | `pact` | [`quant::pact`] |
//! | relaxation | `softmax` | [`relax::softmax`] |
//! | relaxation | `gumbel` | [`relax::gumbel`] |
//! | cost | `bitops` | [`cost::bitops`] |
//! | cost | `activation_memory` | [`cost::activation_memory`] |
//! | cost | `size` | [`cost::size`] |
//! | cost | `latency_lut` | [`cost::latency_lut`] |
//!
//! `dorefa`, `lsq`, `pact`, `gumbel`, `activation_memory`, `size` and `latency_lut` go beyond
//! EdMIPS (see their files for the papers). The EdMIPS plugins'
//! numerics follow the reference exactly (decisions.md R1-R6): f32 arithmetic with the steps
//! rounded to f32 first, round half to even, HWGQ's straight-through gradient masked by the
//! closed clip interval (D1), the Gaussian quantizer's identity gradient (D6), BitOps with the
//! input size / stride² (D2) normalised by the first searchable layer (D3).
//!
//! `hwgq`, `gauss` and `dorefa` provide the fused mixture kernel (CPU and CUDA) through
//! [`edmips_core::ops::mixture::ElementQuantizer`]; the learnable `lsq` and `pact` are composed
//! from tensor ops (their parameters need gradients) and use the composed default of
//! [`edmips_core::Quantizer::mix`], as any plugin without a kernel does.

#![warn(missing_docs)]

pub mod cost;
pub mod quant;
pub mod relax;

pub use cost::activation_memory::ActivationMemory;
pub use cost::bitops::BitOps;
pub use cost::latency_lut::LatencyLut;
pub use cost::size::Size;
pub use quant::dorefa::Dorefa;
pub use quant::gauss::Gauss;
pub use quant::hwgq::Hwgq;
pub use quant::lsq::Lsq;
pub use quant::pact::Pact;
pub use relax::gumbel::Gumbel;
pub use relax::softmax::Softmax;
