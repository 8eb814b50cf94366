//! Network declaration: [`NetBuilder`] (shape-inferring builder used by backbones) and the
//! [`Graph`] it produces.
//!
//! A [`Graph`] is a list of nodes in declaration (= topological) order, each with its output
//! shape, plus the [`LayerInfo`](crate::LayerInfo) of every searchable convolution. It holds no
//! tensors: [`Network`] turns it into parameters and a runnable forward pass for search,
//! retrain or full precision, and [`build_network`] does so from a configuration.

mod build;
mod builder;
mod network;

pub use build::{build_network, declare_graph, resolve_mode};
pub use builder::{BnOpts, Graph, InitScheme, NetBuilder, Node, NodeId, NodeOp, Pad, PoolOpts};
pub use network::{Forward, LayerMode, Network, NetworkSetup};
