//! # edmips
//!
//! Differentiable mixed-precision quantization search (EdMIPS, Cai & Vasconcelos, CVPR 2020)
//! as a plugin framework. This is the application crate; the plugin API lives in
//! [`core`] so that plugin crates compile nothing of what is here.
//!
//! * [`core`] (`edmips-core`): the four plugin traits, registries, plugin parameters, custom
//!   ops, layers and the network graph: all a plugin crate needs;
//! * [`plugins`] (`edmips-plugins`): the EdMIPS quantizers, relaxation and BitOps cost;
//! * [`zoo`] (`edmips-zoo`): backbones and the named EdMIPS configurations;
//! * [`data`]: data sets, transforms and the deterministic parallel loader;
//! * [`engine`]: the training step, the search and retrain loops, optimiser, checkpoints,
//!   reports, plots and the step bench;
//! * [`export`]: a retrained network as a QONNX or plain ONNX file (`edmips export`);
//! * [`cli`]: the `edmips` command line as library code ([`cli::main`]).
//!
//! Naming this crate also links every built-in plugin, so the registries see them: binaries
//! and tests that rely on the registry should call [`link_builtins`] (the CLI does).
//!
//! The decisions that tie the numerics to the EdMIPS reference are written down in
//! `docs/decisions.md`; code comments cite them by id (`decisions.md D5`).

#![warn(missing_docs)]

pub use edmips_core as core;
pub use edmips_plugins as plugins;
pub use edmips_zoo as zoo;

pub mod cli;
pub mod data;
pub mod engine;
pub mod export;

pub use edmips_core::{
    registry, Backbone, BitDistribution, ComplexityCost, Error, LayerInfo, ModelConfig, Operand, PluginSpec, Quantizer,
    RelaxContext, Relaxation, Result,
};

/// Forces the plugin crates to be linked (inventory only sees linked crates).
#[doc(hidden)]
pub fn link_builtins() {
    let _ = (std::any::type_name::<edmips_plugins::Hwgq>(), edmips_zoo::LINK);
}
