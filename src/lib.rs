//! # edmips
//!
//! Differentiable mixed-precision quantization search (EdMIPS, Cai & Vasconcelos, CVPR 2020)
//! as a plugin framework. This facade re-exports the workspace crates:
//!
//! * [`core`] (`edmips-core`): the four plugin traits, registries, config, custom ops, layers;
//! * [`plugins`] (`edmips-plugins`): the EdMIPS quantizers, relaxation and BitOps cost;
//! * [`zoo`] (`edmips-zoo`): backbones and the named EdMIPS configurations.
//!
//! Naming this crate also links every built-in plugin, so the registries see them: binaries
//! and tests that rely on the registry should `use edmips as _;`.

pub use edmips_core as core;
pub use edmips_plugins as plugins;
pub use edmips_zoo as zoo;

pub use edmips_core::{
    registry, Backbone, BitDistribution, ComplexityCost, Error, LayerInfo, ModelConfig, Operand, PluginSpec, Quantizer,
    RelaxContext, Relaxation, Result,
};

/// Forces the plugin crates to be linked (inventory only sees linked crates).
#[doc(hidden)]
pub fn link_builtins() {
    let _ = (std::any::type_name::<edmips_plugins::Hwgq>(), edmips_zoo::LINK);
}
