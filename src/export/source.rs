//! The network an export starts from: a retrain checkpoint loaded into its fixed-bit network,
//! with the plugins its configuration names.
//!
//! The checkpoint's metadata holds the resolved configuration and the per-layer
//! `(wbit, abit)` it was trained with (`RunState::bits`), so no `--ac` is needed; when one is
//! given it must name the same bits. A search checkpoint is refused: its network is the soft
//! mixture of every candidate, not one architecture.

use std::path::Path;

use candle_core::Device;

use super::error::{ExportError, Result};
use crate::engine::checkpoint::{self, RunState};
use crate::engine::RunConfig;
use edmips_core::arch_file::load_arch_file;
use edmips_core::graph::{build_network, declare_graph, Network};
use edmips_core::traits::{ComplexityCost, Quantizer};
use edmips_core::{registry, LayerInfo};

/// A loaded retrained network and its plugins.
#[derive(Debug)]
pub struct ExportSource {
    /// The network, with the checkpoint's tensors.
    pub net: Network,
    /// The configuration the run was made with.
    pub config: RunConfig,
    /// The run state (epoch, bits, data identity).
    pub state: RunState,
    /// The activation quantizer.
    pub act_quantizer: Box<dyn Quantizer>,
    /// The weight quantizer.
    pub weight_quantizer: Box<dyn Quantizer>,
    /// The complexity cost (for the BitOps metadata).
    pub cost: Box<dyn ComplexityCost>,
}

/// The differences between two per-layer bit lists, one line per layer.
pub fn bit_differences(layers: &[LayerInfo], was: &[(u32, u32)], now: &[(u32, u32)]) -> Vec<String> {
    let mut d: Vec<String> = layers
        .iter()
        .zip(was.iter().zip(now))
        .filter(|(_, (a, b))| a != b)
        .map(|(l, (a, b))| {
            format!("layer {} `{}`: w{}a{} in the checkpoint, w{}a{} in the file", l.index, l.name, a.0, a.1, b.0, b.1)
        })
        .collect();
    if was.len() != now.len() {
        d.push(format!("{} layers in the checkpoint, {} in the file", was.len(), now.len()));
    }
    d
}

/// Loads the retrain checkpoint `path` (on `device`); `arch_file` (`--ac`), when given, must
/// name the bits the checkpoint was trained with.
pub fn load_retrained(path: &Path, arch_file: Option<&Path>, device: &Device) -> Result<ExportSource> {
    let ck = checkpoint::load(path, device)?;
    let bad = |message: String| ExportError::BadCheckpoint { path: path.to_path_buf(), message };
    match ck.state.kind.as_str() {
        "search" => return Err(ExportError::SearchCheckpoint { path: path.to_path_buf() }),
        "train" => {}
        other => return Err(bad(format!("unknown run kind `{other}` (expected a `train` checkpoint)"))),
    }
    let cfg = ck.config;
    let bits = ck
        .state
        .bits
        .clone()
        .ok_or_else(|| bad("it records no per-layer bits (`edmips.state` has no `bits`)".into()))?;
    if let Some(ac) = arch_file {
        let graph = declare_graph(&cfg.model)?;
        let file_bits = load_arch_file(ac, graph.searchable_layers())?;
        let diffs = bit_differences(graph.searchable_layers(), &bits, &file_bits);
        if !diffs.is_empty() {
            return Err(ExportError::ArchMismatch { arch: ac.to_path_buf(), checkpoint: path.to_path_buf(), diffs });
        }
    }
    let net = build_network(&cfg.model, Some(&bits), device, cfg.train.seed)?;
    let built = net.chosen_bits()?;
    if built != bits {
        let diffs = bit_differences(net.searchable_layers(), &bits, &built).join("; ");
        return Err(bad(format!("its configuration `{}` builds other bits than it records: {diffs}", cfg.config_name)));
    }
    for p in net.params().iter() {
        let t = ck
            .tensors
            .get(&p.name)
            .ok_or_else(|| bad(format!("no tensor `{}` (made for another network?)", p.name)))?;
        if t.dims() != p.var.dims() {
            return Err(bad(format!("tensor `{}` is {:?}, the network needs {:?}", p.name, t.dims(), p.var.dims())));
        }
        p.var.set(&t.to_dtype(p.var.dtype())?)?;
    }
    Ok(ExportSource {
        act_quantizer: registry::build_quantizer(&cfg.model.act_quantizer)?,
        weight_quantizer: registry::build_quantizer(&cfg.model.weight_quantizer)?,
        cost: registry::build_cost(&cfg.model.cost)?,
        net,
        state: ck.state,
        config: cfg,
    })
}
