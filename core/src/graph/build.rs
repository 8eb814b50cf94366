//! From a [`ModelConfig`] to a runnable [`Network`]: registry lookups, graph declaration and
//! the resolution of the configuration's quantization mode to a [`LayerMode`].

use std::sync::Arc;

use candle_core::Device;

use super::builder::{Graph, NetBuilder};
use super::network::{LayerMode, Network, NetworkSetup};
use crate::bits::FULL_PRECISION_BITS;
use crate::error::{Error, Result};
use crate::layer_info::LayerInfo;
use crate::model_config::{FixedBits, ModelConfig, QuantMode};
use crate::registry;
use crate::traits::ComplexityCost;

/// Declares the configuration's backbone (from the registry) for its number of classes.
pub fn declare_graph(cfg: &ModelConfig) -> Result<Graph> {
    let backbone = registry::build_backbone(&cfg.backbone)?;
    NetBuilder::declare(backbone.as_ref(), cfg.num_classes)
}

/// The [`LayerMode`] of `cfg` for a network with these searchable `layers`.
///
/// * `Search` → [`LayerMode::Search`];
/// * `Fixed { Uniform }` → the same bits for every layer;
/// * `Fixed { List }` → the list, whose length must equal the number of layers;
/// * `Fixed { ArchFile }` → `arch`, which must be given (`--ac ARCH_FILE`);
/// * `FullPrecision` → [`LayerMode::FullPrecision`].
///
/// `config_name` names the configuration in errors.
pub fn resolve_mode(
    cfg: &ModelConfig,
    config_name: &str,
    layers: &[LayerInfo],
    arch: Option<&[(u32, u32)]>,
) -> Result<LayerMode> {
    Ok(match &cfg.mode {
        QuantMode::Search { wbits, abits } => LayerMode::Search { wbits: wbits.clone(), abits: abits.clone() },
        QuantMode::FullPrecision => LayerMode::FullPrecision,
        QuantMode::Fixed { bits: FixedBits::Uniform { wbit, abit } } => {
            LayerMode::Fixed(vec![(*wbit, *abit); layers.len()])
        }
        QuantMode::Fixed { bits: FixedBits::List { layers: list } } => {
            if list.len() != layers.len() {
                return Err(Error::config(
                    config_name,
                    "mode.bits.layers",
                    format!(
                        "the list has {} [wbit, abit] entries but backbone `{}` has {} searchable layers",
                        list.len(),
                        cfg.backbone.id,
                        layers.len()
                    ),
                ));
            }
            LayerMode::Fixed(list.iter().map(|&[w, a]| (w, a)).collect())
        }
        QuantMode::Fixed { bits: FixedBits::ArchFile } => match arch {
            Some(a) => {
                if a.len() != layers.len() {
                    return Err(Error::msg(format!(
                        "configuration {config_name}: the architecture has {} layers but backbone `{}` has {} searchable layers",
                        a.len(),
                        cfg.backbone.id,
                        layers.len()
                    )));
                }
                LayerMode::Fixed(a.to_vec())
            }
            None => {
                return Err(Error::msg(format!(
                    "configuration {config_name} needs an architecture file: pass --ac ARCH_FILE"
                )))
            }
        },
    })
}

/// Builds the network of `cfg`: looks up the backbone, quantizers and relaxation in the
/// registry, declares the graph and resolves the mode (`arch` is the per-layer
/// `(wbit, abit)` list of an architecture file, needed by `Fixed { ArchFile }` configurations).
pub fn build_network(cfg: &ModelConfig, arch: Option<&[(u32, u32)]>, device: &Device, seed: u64) -> Result<Network> {
    let graph = declare_graph(cfg)?;
    let mode = resolve_mode(cfg, &cfg.backbone.id, &graph.searchable, arch)?;
    let setup = NetworkSetup {
        mode,
        act_quantizer: Arc::from(registry::build_quantizer(&cfg.act_quantizer)?),
        weight_quantizer: Arc::from(registry::build_quantizer(&cfg.weight_quantizer)?),
        relaxation: Arc::from(registry::build_relaxation(&cfg.relaxation)?),
    };
    Network::new(graph, setup, device, seed)
}

/// The `(weight, activation)` bit widths each searchable layer may use in `mode`: the
/// candidates in a search, the one fixed pair otherwise (what [`ComplexityCost::validate`]
/// checks).
pub fn mode_bits(mode: &LayerMode, layers: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    match mode {
        LayerMode::Search { wbits, abits } => vec![(wbits.clone(), abits.clone()); layers],
        LayerMode::Fixed(bits) => bits.iter().map(|&(w, a)| (vec![w], vec![a])).collect(),
        LayerMode::FullPrecision => vec![(vec![FULL_PRECISION_BITS], vec![FULL_PRECISION_BITS]); layers],
    }
}

/// Builds the configuration's cost for `graph` in `mode`: looks it up in the registry, tells
/// it the full-precision layers ([`ComplexityCost::set_fixed_layers`]) and checks it can price
/// every layer at every bit width the mode uses ([`ComplexityCost::validate`]).
pub fn build_cost(cfg: &ModelConfig, graph: &Graph, mode: &LayerMode) -> Result<Box<dyn ComplexityCost>> {
    let mut cost = registry::build_cost(&cfg.cost)?;
    cost.set_fixed_layers(&graph.fixed_layers());
    let layers = graph.searchable_layers();
    cost.validate(layers, &mode_bits(mode, layers.len()))?;
    Ok(cost)
}
