//! Network declaration: [`NetBuilder`] (shape-inferring builder used by backbones) and the
//! [`Graph`] it produces.
//!
//! A [`Graph`] is a list of nodes in declaration (= topological) order, each with its output
//! shape, plus the [`LayerInfo`](crate::LayerInfo) of every searchable convolution. It holds no
//! tensors: turning it into a runnable network for search, retrain or full precision is the
//! job of the network executor.

mod builder;

pub use builder::{BnOpts, Graph, InitScheme, NetBuilder, Node, NodeId, NodeOp, Pad, PoolOpts};
