//! # edmips-core
//!
//! The core of edmips, a framework for differentiable mixed-precision quantization search
//! (EdMIPS: Cai & Vasconcelos, "Rethinking Differentiable Search for Mixed-Precision Neural
//! Networks", CVPR 2020).
//!
//! ## Design in one page
//!
//! * **Four extension traits** ([`Quantizer`], [`Relaxation`], [`ComplexityCost`], [`Backbone`])
//!   are the only things a researcher implements. Each lives in one file of its own crate and
//!   registers itself with a macro ([`registry`]); configurations name plugins by id
//!   ([`PluginSpec`]). The built-in EdMIPS plugins (crate `edmips-plugins`) and backbones
//!   (crate `edmips-zoo`) use exactly this public API.
//! * **Tensors and autodiff are candle's** ([`candle`] re-exports `candle-core`). Hot element-wise
//!   work is our own custom ops ([`ops`]): the fused quantizer mixture
//!   `Σ_i p_i · Q_{b_i}(x)` runs in one pass forward and one pass backward (dx and dp), with a
//!   multi-threaded CPU kernel and a CUDA kernel compiled at run time with NVRTC. A quantizer
//!   only writes its per-element function (in Rust, and in CUDA C for the GPU) to get it.
//! * **Quantizers may learn** (LSQ's step, PACT's clip): a quantizer declares its parameters
//!   ([`QuantParam`]); the network owns them per layer and bit width, named like every other
//!   tensor, in their own optimiser group ([`param_store::ParamGroup::Quant`]), initialised from
//!   the first batch where the method asks ([`layers::LearnedState`], decisions.md F1).
//! * **Networks are declared, not hand-wired** ([`graph`]): a backbone declares its layers on a
//!   shape-inferring [`graph::NetBuilder`]. Its `quant_conv` calls become mixed (search),
//!   fixed-bit (retrain) or full-precision convolutions ([`layers`]), and their
//!   [`LayerInfo`]s (sizes, BitOps) are known before anything runs.
//! * **Errors** are one [`Error`] enum whose messages name the file, key, plugin id or layer
//!   at fault. Nothing user-supplied is unwrapped.
//!
//! The reference semantics (quantizer constants, rounding, straight-through rules, BitOps
//! units) are documented where they are implemented, citing `docs/decisions.md` at the
//! repository root by id: D1-D21 are the decisions that pin edmips to the EdMIPS reference,
//! F1-F7 those about what goes beyond it (learnable quantizers, costs, export), R1-R18 the
//! reference facts the code relies on (layer layouts, loops, data). A bare `Dn` in
//! a comment is `decisions.md Dn`.

#![warn(missing_docs)]

pub mod arch_file;
pub mod bits;
pub mod error;
pub mod graph;
pub mod init;
pub mod layer_info;
pub mod layers;
pub mod model_config;
pub mod ops;
pub mod param_store;
pub mod plugin_params;
pub mod registry;
pub mod traits;

pub use bits::{Precision, FULL_PRECISION_BITS};
pub use candle_core as candle;
pub use error::{Error, Result};
pub use layer_info::{LayerInfo, LayerKind};
pub use model_config::{FixedBits, ModelConfig, QuantMode};
pub use plugin_params::{defaults_of, parse_params, Params, PluginSpec, Table};
pub use traits::backbone::{Backbone, InputSpec};
pub use traits::cost::{BitDistribution, ComplexityCost, CostSummary, LayerBits, Metric};
pub use traits::quant_export::{QuantExport, Rounding, UniformQuant};
pub use traits::quantizer::{compose_mixture, learned_param_name, operand_prefix, Operand, QuantParam, Quantizer};
pub use traits::relaxation::{argmax_first, RelaxContext, Relaxation};

#[doc(hidden)]
pub use inventory;
