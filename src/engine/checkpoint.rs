//! Checkpoints: every tensor of the network (weights, logits, batch-norm statistics) and both
//! optimisers' momentum buffers in one safetensors file, with the run state ([`RunState`]: kind, epoch,
//! position in the epoch, global step, best accuracy) and the resolved configuration as JSON in
//! the file's metadata; the learning rates follow from the configuration and the epoch. One file means one atomic write (temporary file + rename): a checkpoint is always
//! complete.
//!
//! Tensor names: the network's parameter names as they are, and `optim.<group>.<name>` for the
//! momentum buffers (`group` is `weight`, `arch` or `quant`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::budget::Controller;
use super::metrics::Mean;
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
    /// Epochs done when `best.safetensors` was last written (`None` before the first epoch).
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// The running sums of the epoch in progress (non-empty after an interruption), so a
    /// resumed epoch reports its metrics over all of its steps.
    #[serde(default)]
    pub partial: EpochPartial,
    /// The per-layer `(wbit, abit)` the network was built with (fixed-bit runs; `None` in a
    /// search, whose candidates are part of the configuration).
    #[serde(default)]
    pub bits: Option<Vec<(u32, u32)>>,
    /// The data set the run trains on.
    #[serde(default)]
    pub data: Option<DataIdentity>,
    /// The budget controller (a search with a target).
    #[serde(default)]
    pub controller: Option<Controller>,
}

/// The sample-weighted sums of a partly done training epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochPartial {
    /// Cross-entropy.
    pub ce: Mean,
    /// Complexity term.
    pub complexity: Mean,
    /// Top-1 (percent).
    pub top1: Mean,
    /// Top-5 (percent).
    pub top5: Mean,
    /// Undecodable images skipped.
    pub skipped: usize,
}

/// What identifies a data set for a resume: its classes and split sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Training samples.
    pub train: usize,
    /// Validation samples.
    pub val: usize,
}

impl DataIdentity {
    /// The differences from `other` (this is the checkpoint's), in words.
    pub fn differences(&self, now: &DataIdentity) -> Vec<String> {
        let mut d = Vec::new();
        if self.classes != now.classes {
            let show = |c: &[String]| {
                if c.len() > 6 {
                    format!("{} classes ({}, ...)", c.len(), c[..6].join(", "))
                } else {
                    format!("{} classes ({})", c.len(), c.join(", "))
                }
            };
            d.push(format!("classes: {} -> {}", show(&self.classes), show(&now.classes)));
        }
        if self.train != now.train {
            d.push(format!("train images: {} -> {}", self.train, now.train));
        }
        if self.val != now.val {
            d.push(format!("val images: {} -> {}", self.val, now.val));
        }
        d
    }
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

/// Reads only the run state of a checkpoint (its metadata), with errors naming the file.
pub fn read_state(path: &Path) -> Result<RunState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading checkpoint", path, e))?;
    let bad = |m: String| Error::msg(format!("checkpoint `{}`: {m}", path.display()));
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let state =
        meta.get(STATE_KEY).ok_or_else(|| bad(format!("no `{STATE_KEY}` metadata: not an edmips checkpoint")))?;
    serde_json::from_str(state).map_err(|e| bad(format!("bad run state: {e}")))
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
