//! Searching to a budget: a target for one metric of the complexity cost (EdMIPS's `bitops`:
//! the normalised `bit`, or `bitops`), held by a controller that sets the complexity weight
//! `cd` during the search, and a repair of the final discrete architecture.
//!
//! **Controller.** After every training step the expected (relaxed) architecture's metric `m`
//! is compared with the target `T`, and the weight is updated by multiplicative dual ascent on
//! the constraint `m <= T`: `cd <- cd · exp(rate · (m - T) / T)`, starting from the configured
//! `--cd` (or [`INITIAL_CD`] when that is 0). Above the budget the complexity term weighs more
//! each step; below it, less, so the cross-entropy pulls bits back up. The weight is logged per
//! step (`cd` in `metrics.jsonl`, a panel of `curves.svg`) and saved in checkpoints, so a
//! resume continues exactly.
//!
//! **Repair.** The argmax of the final logits need not meet the budget exactly. When its metric
//! misses the target by more than the tolerance, the repair changes one layer at a time: each
//! round takes the single change of one layer's `(wbit, abit)` among its candidates that brings
//! the metric closest to the target, preferring, among equally good changes, the one whose new
//! bits have the most probability mass under the relaxation; when no single change gets closer
//! it tries changing two layers at once. It stops inside the tolerance (or when nothing helps)
//! and the architecture report lists every change. Without a target (`--cd` alone) nothing of
//! this runs: the reference's behaviour.

use serde::{Deserialize, Serialize};

use edmips_core::error::{Error, Result};
use edmips_core::graph::Network;
use edmips_core::{ComplexityCost, LayerBits, LayerInfo, RelaxContext};

use super::arch_report::ArchReport;

/// The complexity weight a controlled search starts from when `--cd` is 0.
pub const INITIAL_CD: f64 = 1e-3;

/// A budget for one metric of the cost's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetTarget {
    /// The metric of the cost's summary to hold (`bit` or `bitops` for `bitops`).
    pub metric: String,
    /// Its target value.
    pub value: f64,
    /// How far the final discrete architecture may miss the target before it is repaired.
    pub tolerance: f64,
    /// The controller's step size (per training step, on the relative gap).
    pub rate: f64,
}

impl Default for BudgetTarget {
    fn default() -> Self {
        BudgetTarget { metric: "bit".into(), value: 2.0, tolerance: 0.01, rate: 0.5 }
    }
}

impl BudgetTarget {
    /// A target for `metric` at `value` with the default tolerance and rate.
    pub fn new(metric: &str, value: f64) -> Self {
        BudgetTarget { metric: metric.into(), value, ..Default::default() }
    }

    /// Checks the numbers, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| Err(Error::config("run configuration", format!("train.target.{k}"), m));
        if !(self.value.is_finite() && self.value > 0.0) {
            return bad("value", format!("must be a positive number, found {}", self.value));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return bad("tolerance", format!("must be a non-negative number, found {}", self.tolerance));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("rate", format!("must be a positive number, found {}", self.rate));
        }
        Ok(())
    }

    /// `metric` of `bits` under `cost`, or an error listing the cost's metrics.
    pub fn measure(&self, cost: &dyn ComplexityCost, layers: &[LayerInfo], bits: &[LayerBits]) -> Result<f64> {
        let s = cost.summarize(layers, bits);
        s.get(&self.metric).ok_or_else(|| {
            let known: Vec<&str> = s.metrics.iter().map(|m| m.name.as_str()).collect();
            Error::config(
                "train.target.metric",
                &self.metric,
                format!("cost `{}` has no such metric; its metrics: {}", cost.id(), known.join(", ")),
            )
        })
    }
}

/// The controller's state (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Controller {
    /// The complexity weight of the next step.
    pub cd: f64,
    /// The expected architecture's metric after the last step.
    pub last_metric: Option<f64>,
}

impl Controller {
    /// A controller starting at `cd` (or [`INITIAL_CD`] when it is 0).
    pub fn new(cd: f64) -> Self {
        Controller { cd: if cd > 0.0 { cd } else { INITIAL_CD }, last_metric: None }
    }

    /// One update after a step whose expected architecture measures `metric`.
    pub fn update(&mut self, target: &BudgetTarget, metric: f64) {
        let gap = (metric - target.value) / target.value;
        self.cd *= (target.rate * gap.clamp(-1.0, 1.0)).exp();
        self.last_metric = Some(metric);
    }
}

/// The expected bits of every searchable layer of `net` under its current logits.
pub fn expected_bits(net: &Network) -> Result<Vec<LayerBits>> {
    net.distributions(&RelaxContext::eval())?
        .iter()
        .map(|(a, w)| {
            let e = |d: &edmips_core::BitDistribution| -> Result<f64> {
                Ok(d.expected()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
            };
            Ok(LayerBits { wbit: e(w)?, abit: e(a)? })
        })
        .collect()
}

/// One layer's change made by the repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairChange {
    /// Layer index.
    pub layer: usize,
    /// Layer name.
    pub name: String,
    /// `(wbit, abit)` before.
    pub from: (u32, u32),
    /// `(wbit, abit)` after.
    pub to: (u32, u32),
}

/// What the repair did to the argmax architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    /// The metric held.
    pub metric: String,
    /// Its target.
    pub target: f64,
    /// The argmax architecture's value before the repair.
    pub before: f64,
    /// The value after.
    pub after: f64,
    /// The changes, in the order made.
    pub changes: Vec<RepairChange>,
}

/// A candidate repair step: (distance to the target after it, probability mass of the new
/// bits, the layer changes).
type Candidate = (f64, f64, Vec<(usize, (u32, u32))>);

fn probability(p: &[f32], bits: &[u32], b: u32) -> f64 {
    bits.iter().position(|&x| x == b).and_then(|i| p.get(i)).map(|&v| v as f64).unwrap_or(0.0)
}

/// Repairs `report`'s chosen bits to meet `target` (see the [module docs](self)); rewrites its
/// per-layer bits and costs and its `argmax` summary, and returns what changed (`None` when the
/// argmax already meets the target). Layers without candidates (not a search) are left alone.
pub fn repair(
    report: &mut ArchReport,
    layers: &[LayerInfo],
    cost: &dyn ComplexityCost,
    target: &BudgetTarget,
) -> Result<Option<Repair>> {
    let mut bits: Vec<(u32, u32)> = report.bits();
    let as_lb = |b: &[(u32, u32)]| -> Vec<LayerBits> {
        b.iter().map(|&(w, a)| LayerBits { wbit: w as f64, abit: a as f64 }).collect()
    };
    let measure = |b: &[(u32, u32)]| target.measure(cost, layers, &as_lb(b));
    let before = measure(&bits)?;
    let dist = |m: f64| (m - target.value).abs();
    if dist(before) <= target.tolerance {
        return Ok(None);
    }
    // Every (layer, new bits, probability mass) a layer may move to.
    let mut moves: Vec<(usize, (u32, u32), f64)> = Vec::new();
    for (i, l) in report.layers.iter().enumerate() {
        for &w in &l.wbits {
            for &a in &l.abits {
                let p = probability(&l.probs_weight, &l.wbits, w) * probability(&l.probs_activ, &l.abits, a);
                moves.push((i, (w, a), p));
            }
        }
    }
    let mut changes = Vec::new();
    let mut current = before;
    for _ in 0..2 * layers.len().max(1) {
        if dist(current) <= target.tolerance {
            break;
        }
        // The best single change: closest to the target, then most probable.
        let mut best: Option<Candidate> = None;
        let better = |d: f64, p: f64, b: &Option<Candidate>| match b {
            None => true,
            Some((bd, bp, _)) => d < *bd - 1e-12 || ((d - *bd).abs() <= 1e-12 && p > *bp),
        };
        for &(i, nb, p) in &moves {
            if bits[i] == nb {
                continue;
            }
            let mut trial = bits.clone();
            trial[i] = nb;
            let d = dist(measure(&trial)?);
            if better(d, p, &best) {
                best = Some((d, p, vec![(i, nb)]));
            }
        }
        if best.as_ref().is_none_or(|(d, _, _)| *d >= dist(current)) {
            // No single change helps: two layers at once.
            for (x, &(i, bi, pi)) in moves.iter().enumerate() {
                if bits[i] == bi {
                    continue;
                }
                for &(j, bj, pj) in &moves[x + 1..] {
                    if j == i || bits[j] == bj {
                        continue;
                    }
                    let mut trial = bits.clone();
                    trial[i] = bi;
                    trial[j] = bj;
                    let d = dist(measure(&trial)?);
                    if better(d, pi * pj, &best) {
                        best = Some((d, pi * pj, vec![(i, bi), (j, bj)]));
                    }
                }
            }
        }
        match best {
            Some((d, _, step)) if d < dist(current) => {
                for (i, nb) in step {
                    changes.push(RepairChange { layer: i, name: report.layers[i].name.clone(), from: bits[i], to: nb });
                    bits[i] = nb;
                }
                current = measure(&bits)?;
            }
            _ => break,
        }
    }
    for (l, (&(w, a), info)) in report.layers.iter_mut().zip(bits.iter().zip(layers)) {
        l.wbit = w;
        l.abit = a;
        l.cost = cost.discrete_cost(info, LayerBits { wbit: w as f64, abit: a as f64 });
    }
    report.argmax = cost.summarize(layers, &as_lb(&bits));
    Ok(Some(Repair { metric: target.metric.clone(), target: target.value, before, after: current, changes }))
}
