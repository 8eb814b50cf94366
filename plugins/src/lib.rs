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
//! | relaxation | `softmax` | [`relax::softmax`] |
//! | relaxation | `gumbel` | [`relax::gumbel`] |
//! | cost | `bitops` | [`cost::bitops`] |
//! | cost | `activation_memory` | [`cost::activation_memory`] |
//!
//! `dorefa`, `gumbel` and `activation_memory` go beyond EdMIPS (see their files for the papers). The EdMIPS plugins'
//! numerics follow the reference exactly (decisions.md R1-R6): f32 arithmetic with the steps
//! rounded to f32 first, round half to even, HWGQ's straight-through gradient masked by the
//! closed clip interval (D1), the Gaussian quantizer's identity gradient (D6), BitOps with the
//! input size / stride² (D2) normalised by the first searchable layer (D3).
//!
//! Both quantizers provide the fused mixture kernel (CPU and CUDA) through
//! [`edmips_core::ops::mixture::ElementQuantizer`]; a plugin that does not still works through
//! the composed default of [`edmips_core::Quantizer::mix`].

#![warn(missing_docs)]

pub mod cost;
pub mod quant;
pub mod relax;

pub use cost::activation_memory::ActivationMemory;
pub use cost::bitops::BitOps;
pub use quant::dorefa::Dorefa;
pub use quant::gauss::Gauss;
pub use quant::hwgq::Hwgq;
pub use relax::gumbel::Gumbel;
pub use relax::softmax::Softmax;
