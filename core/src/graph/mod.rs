//! Network declaration: [`NetBuilder`] (shape-inferring builder used by backbones) and the
//! [`Graph`] it produces.
//!
//! A [`Graph`] is a list of nodes in declaration (= topological) order, each with its output
//! shape, plus the [`LayerInfo`](crate::LayerInfo) of every searchable convolution. It holds no
//! tensors: [`Network`] turns it into parameters and a runnable forward pass for search,
//! retrain or full precision, and [`build_network`] does so from a configuration
//! ([`build_cost`] builds its cost, told the full-precision layers and checked against the
//! mode's bit widths).
//!
//! [`Network`] parameters (state-dict keys) are created in node declaration order: a
//! full-precision conv has `<name>.weight`; a quantizable conv has, in search mode,
//! `<name>.alpha_activ` and `<name>.alpha_weight` (group Arch, the relaxation's initial logits)
//! then `<name>.weight`, otherwise `<name>.weight` only, then the learnable parameters of a
//! learnable quantizer (`<name>.act_quant.step.b2`, group Quant); a batch norm has `<name>.weight` = 1 and
//! `<name>.bias` = 0 when affine, and the buffers `<name>.running_mean` = 0 and
//! `<name>.running_var` = 1; a linear layer has `<name>.weight` `[out, in]` and `<name>.bias`.
//! Initialisation (decision D18) draws from one seeded `Rng` in declaration order. Search mode
//! builds every quantizable conv as a `MixedConv`, fixed mode as a `FixedConv` at its
//! (wbit, abit), full precision as a `FixedConv` at (32, 32). The forward pass frees each
//! intermediate once its last consumer ran; in train mode batch norm uses batch statistics and
//! updates its running statistics in place.

mod build;
mod builder;
mod network;

pub use build::{build_cost, build_network, declare_graph, mode_bits, resolve_mode};
pub use builder::{BnOpts, Graph, InitScheme, NetBuilder, Node, NodeId, NodeOp, Pad, PoolOpts};
pub use network::{Forward, LayerMode, LearnedValues, Network, NetworkSetup};
