//! Accuracy, running averages, and the `metrics.jsonl` log: its record types ([`StepRecord`],
//! [`EpochRecord`]) and reading the epoch history back ([`read_history`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use edmips_core::error::{Error, Result};
use edmips_core::ops::consts::cached;

/// Top-1 and top-5 hits of `logits` `[B, K]` against `labels` `[B]` (counts, not percent). Ties
/// rank the earlier class first, as `torch.topk` does for equal values in practice.
pub fn topk_hits(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let l: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    let y: Vec<u32> = labels.to_vec1()?;
    let (mut top1, mut top5) = (0, 0);
    for (row, &t) in l.iter().zip(&y) {
        let target = row[t as usize];
        // Rank of the target: classes with a larger score, or an equal score and a smaller index.
        let rank = row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < t as usize)).count();
        top1 += usize::from(rank < 1);
        top5 += usize::from(rank < 5);
    }
    Ok((top1, top5))
}

/// [`topk_hits`] on the logits' device: `[top-1 hits, top-5 hits]` as a `[2]` f32 tensor
/// (exact counts), with the same ranking rule, computed by tensor ops so that nothing waits for
/// the device. The training step reads it with the loss, in its one host read.
pub fn topk_hits_tensor(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = logits.detach().to_dtype(DType::F32)?;
    let (b, k) = logits.dims2()?;
    let dev = logits.device();
    let labels = labels.to_dtype(DType::U32)?.reshape((b, 1))?;
    let target = logits.gather(&labels, 1)?;
    let classes = cached(dev, "metrics.arange_u32", &[k as u32], |d| Ok(Tensor::arange(0u32, k as u32, d)?))?;
    let earlier = classes.reshape((1, k))?.broadcast_lt(&labels)?.to_dtype(DType::F32)?;
    let greater = logits.broadcast_gt(&target)?.to_dtype(DType::F32)?;
    let tie = logits.broadcast_eq(&target)?.to_dtype(DType::F32)?;
    // Rank of the target: classes with a larger score, or an equal score and a smaller index.
    let rank = greater.add(&tie.mul(&earlier)?)?.sum_keepdim(1)?;
    // `rank < [1, 5]` against a cached constant (a scalar comparison would copy the scalar to
    // the device on every call).
    let tops = cached(dev, "metrics.top_1_5", &[], |d| Ok(Tensor::new(&[1f32, 5.0], d)?.reshape((1, 2))?))?;
    Ok(rank.broadcast_lt(&tops)?.to_dtype(DType::F32)?.sum(0)?)
}

/// A sample-weighted running average (saved in checkpoints mid-epoch: its sums round-trip
/// exactly through JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    sum: f64,
    n: f64,
}

impl Mean {
    /// Adds `value` with weight `n`.
    pub fn add(&mut self, value: f64, n: usize) {
        self.sum += value * n as f64;
        self.n += n as f64;
    }
    /// The total weight added so far (0 when empty).
    pub fn count(&self) -> f64 {
        self.n
    }

    /// The average (0 when empty).
    pub fn get(&self) -> f64 {
        if self.n > 0.0 {
            self.sum / self.n
        } else {
            0.0
        }
    }
}

/// Appends JSON lines to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// A log at `path` (created on first write).
    pub fn new(path: &Path) -> Self {
        MetricsLog { path: path.to_path_buf() }
    }

    /// Keeps only the records a resumed run has already accounted for: step records up to
    /// `global_step` and epoch records of epochs before `epoch` (what a crash after the
    /// checkpoint wrote is dropped, so a resumed run never logs a step twice). Rewritten
    /// atomically; lines that are not records (a torn last line) are dropped too.
    pub fn truncate_to(&self, epoch: usize, global_step: u64) -> Result<()> {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return Ok(()) };
        let keep: Vec<&str> = text
            .lines()
            .filter(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
                match v["kind"].as_str() {
                    Some("step") => v["global_step"].as_u64().is_some_and(|g| g <= global_step),
                    Some("epoch") => v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch),
                    _ => false,
                }
            })
            .collect();
        let mut out = keep.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        if out != text {
            super::atomic::write_atomic(&self.path, out.as_bytes())?;
        }
        Ok(())
    }

    /// Appends one record as a line.
    pub fn write<T: Serialize>(&self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|e| Error::msg(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io("opening", &self.path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io("writing", &self.path, e))
    }
}

/// One `-p` step line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// `"step"`.
    pub kind: &'static str,
    /// Epoch index.
    pub epoch: usize,
    /// Steps done in the epoch.
    pub step: usize,
    /// Steps done in the run.
    pub global_step: u64,
    /// Weight learning rate.
    pub lr: f64,
    /// Logit learning rate.
    pub lra: f64,
    /// Running mean cross-entropy of the epoch.
    pub ce: f64,
    /// Running mean complexity term.
    pub complexity: f64,
    /// Running training top-1 (percent).
    pub top1: f64,
    /// Running training top-5 (percent).
    pub top5: f64,
    /// The complexity weight of the next step (controlled when the search has a target).
    pub cd: f64,
    /// Training throughput.
    pub images_per_s: f64,
}

/// One epoch's record (in `metrics.jsonl` and the plots).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// `"epoch"`.
    pub kind: String,
    /// Epoch index.
    pub epoch: usize,
    /// Weight learning rate.
    pub lr: f64,
    /// Logit learning rate.
    pub lra: f64,
    /// Mean training cross-entropy.
    pub train_ce: f64,
    /// Mean complexity term.
    pub complexity: f64,
    /// Training top-1 (percent).
    pub train_top1: f64,
    /// Validation cross-entropy.
    pub val_ce: f64,
    /// Validation top-1.
    pub val_top1: f64,
    /// Validation top-5.
    pub val_top5: f64,
    /// Normalised bit of the chosen bits.
    pub bit: f64,
    /// Normalised bit of the expected bits (search).
    pub bit_expected: Option<f64>,
    /// Training throughput.
    pub images_per_s: f64,
    /// Undecodable training images skipped this epoch.
    pub skipped: usize,
    /// Undecodable validation images skipped.
    #[serde(default)]
    pub val_skipped: usize,
    /// Training steps done in the run at the end of this epoch.
    #[serde(default)]
    pub global_step: u64,
    /// The complexity weight at the end of the epoch.
    #[serde(default)]
    pub cd: f64,
}

/// The epoch records of an existing `metrics.jsonl` (empty when there is none).
pub fn read_history(path: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str::<EpochRecord>(l).ok())
                .filter(|r| r.kind == "epoch")
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn topk_counts_ranks_with_ties_to_the_earlier_class() {
        let logits = Tensor::new(
            &[[0.1f32, 0.9, 0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.4, 0.3, 0.2, 0.1], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = Tensor::new(&[1u32, 1, 0], &Device::Cpu).unwrap();
        // Row 0: hit. Row 1: class 0 ties and wins: rank 1 (top-5 only). Row 2: rank 5: miss.
        assert_eq!(topk_hits(&logits, &labels).unwrap(), (1, 2));
        assert_eq!(topk_hits_tensor(&logits, &labels).unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn the_device_count_matches_the_host_count() {
        // Coarse values, so that many scores tie.
        let (b, k) = (64, 10);
        let v: Vec<f32> = edmips_core::init::det_fill(b * k, 3, 4.0).iter().map(|x| x.round()).collect();
        let logits = Tensor::from_vec(v, (b, k), &Device::Cpu).unwrap();
        let labels: Vec<u32> = (0..b as u32).map(|i| (i * 7) % k as u32).collect();
        let labels = Tensor::from_vec(labels, b, &Device::Cpu).unwrap();
        let (h1, h5) = topk_hits(&logits, &labels).unwrap();
        let t = topk_hits_tensor(&logits, &labels).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(t, vec![h1 as f32, h5 as f32]);
        assert!(h1 > 0 && h5 > h1 && h5 < b);
    }
}
