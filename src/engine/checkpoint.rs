//! Checkpoints: every tensor of the network (weights, logits, batch-norm statistics) and both
//! optimisers' momentum buffers in one safetensors file, with the run state ([`RunState`]: kind, epoch,
//! position in the epoch, global step, best accuracy) and the resolved configuration as JSON in
//! the file's metadata; the learning rates follow from the configuration and the epoch. One file means one atomic write (temporary file + rename): a checkpoint is always
//! complete.
//!
//! Tensor names: the network's parameter names as they are, and `optim.<group>.<name>` for the
//! momentum buffers (`group` is `weight` or `arch`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::run_config::RunConfig;
use edmips_core::error::{Error, Result};

/// Metadata key holding the [`RunState`] JSON.
const STATE_KEY: &str = "edmips.state";
/// Metadata key holding the resolved [`RunConfig`] JSON.
const CONFIG_KEY: &str = "edmips.config";

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// `"search"` or `"train"`.
    pub kind: String,
    /// The epoch to run next (or to continue, when `step_in_epoch > 0`).
    pub epoch: usize,
    /// Training steps already done in `epoch` (non-zero after an interruption).
    pub step_in_epoch: usize,
    /// Training steps done in the whole run.
    pub global_step: u64,
    /// Best validation top-1 so far (percent).
    pub best_acc1: f64,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Run state.
    pub state: RunState,
    /// The configuration the run was started with.
    pub config: RunConfig,
    /// Network tensors by parameter name.
    pub tensors: HashMap<String, Tensor>,
    /// Momentum buffers by group (`weight`, `arch`) and parameter name.
    pub momentum: HashMap<String, HashMap<String, Tensor>>,
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    state: &RunState,
    config: &RunConfig,
    tensors: &[(String, Tensor)],
    momentum: &[(&str, &HashMap<String, Tensor>)],
) -> Result<()> {
    let mut all: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(&Device::Cpu)))
        .map(|(n, t)| Ok((n, t?)))
        .collect::<Result<_>>()?;
    for (group, bufs) in momentum {
        for (name, t) in bufs.iter() {
            all.push((format!("optim.{group}.{name}"), t.to_device(&Device::Cpu)?));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = HashMap::new();
    meta.insert(STATE_KEY.to_string(), serde_json::to_string(state).map_err(|e| Error::msg(e.to_string()))?);
    meta.insert(CONFIG_KEY.to_string(), serde_json::to_string(config).map_err(|e| Error::msg(e.to_string()))?);
    let bytes = safetensors::serialize(all.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| Error::msg(format!("serialising checkpoint {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint, with errors naming the file.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading checkpoint", path, e))?;
    let bad = |m: String| Error::msg(format!("checkpoint `{}`: {m}", path.display()));
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no `{k}` metadata: not an edmips checkpoint")));
    let state: RunState = serde_json::from_str(get(STATE_KEY)?).map_err(|e| bad(format!("bad run state: {e}")))?;
    let config: RunConfig =
        serde_json::from_str(get(CONFIG_KEY)?).map_err(|e| bad(format!("bad configuration: {e}")))?;
    let loaded = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(e.to_string()))?;
    let mut tensors = HashMap::new();
    let mut momentum: HashMap<String, HashMap<String, Tensor>> = HashMap::new();
    for (name, t) in loaded {
        match name.strip_prefix("optim.").and_then(|r| r.split_once('.')) {
            Some((group, param)) => {
                momentum.entry(group.to_string()).or_default().insert(param.to_string(), t);
            }
            None => {
                tensors.insert(name, t);
            }
        }
    }
    Ok(Checkpoint { state, config, tensors, momentum })
}
