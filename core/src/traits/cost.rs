//! The [`ComplexityCost`] trait: a differentiable complexity of the relaxed architecture, the
//! exact cost of a discrete one, and a human-readable summary.
//!
//! EdMIPS's `bitops` cost is `size_product · E[abits] · E[wbits]` per layer, summed over the
//! searchable layers and divided by the first layer's `size_product` (decision D3). Its summary
//! gives BitOps, bita, bitw and the "normalised bit" `sqrt(BitOps / Σ size_product)`.
//!
//! # Example: a MAC-weighted weight-bit cost
//!
//! ```
//! use edmips_core::candle::{Device, Tensor};
//! use edmips_core::{BitDistribution, ComplexityCost, CostSummary, LayerBits, LayerInfo, Metric, Result};
//!
//! /// Multiply-accumulates times weight bits (a bit-serial accelerator's cycles, in M):
//! /// MACs · E[wbits]; activations are free.
//! #[derive(Debug)]
//! struct SerialCycles;
//! impl ComplexityCost for SerialCycles {
//!     fn id(&self) -> &str { "serial_cycles" }
//!     fn layer_cost(&self, l: &LayerInfo, _a: &BitDistribution, w: &BitDistribution) -> Result<Tensor> {
//!         Ok((w.expected()? * (l.macs() as f64 * 1e-6))?)
//!     }
//!     fn normalizer(&self, _layers: &[LayerInfo]) -> f64 { 1.0 }
//!     fn discrete_cost(&self, l: &LayerInfo, bits: LayerBits) -> f64 { l.macs() as f64 * 1e-6 * bits.wbit }
//!     fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
//!         let total: f64 = layers.iter().zip(bits).map(|(l, b)| self.discrete_cost(l, *b)).sum();
//!         let cycles = Metric::new("cycles", total, "M");
//!         CostSummary { headline: cycles.clone(), metrics: vec![cycles] }
//!     }
//! }
//! ```

use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer_info::LayerInfo;
use crate::ops::consts::cached;

/// A relaxed distribution over candidate bit widths: the candidates and their mixing weights.
#[derive(Debug, Clone)]
pub struct BitDistribution {
    /// Candidate bit widths.
    pub bits: Vec<u32>,
    /// Mixing weights, rank 1, one per candidate (differentiable).
    pub probs: Tensor,
}

impl BitDistribution {
    /// `Σ_i probs[i] · bits[i]` as a differentiable scalar, summed in index order. The bit
    /// widths as a tensor are a per-device constant ([`cached`]): no host-to-device copy per
    /// layer per step.
    pub fn expected(&self) -> Result<Tensor> {
        let bits = cached(self.probs.device(), "cost.bits_f32", &self.bits, |d| {
            let bits: Vec<f32> = self.bits.iter().map(|&b| b as f32).collect();
            Ok(Tensor::from_vec(bits, self.bits.len(), d)?)
        })?;
        Ok(self.probs.to_dtype(DType::F32)?.mul(&bits)?.sum_all()?)
    }
}

/// The (wbit, abit) of one layer; fractional for expected values of a relaxed architecture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerBits {
    /// Weight bits.
    pub wbit: f64,
    /// Activation bits.
    pub abit: f64,
}

/// One named figure of a cost summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Name, e.g. `bitops`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit, e.g. `MBitOps` (empty for a pure number).
    pub unit: String,
}

impl Metric {
    /// A metric.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Metric { name: name.into(), value, unit: unit.into() }
    }
}

/// A cost's summary of an allocation: named metrics, and one headline figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// The figure that stands for the whole allocation (EdMIPS: normalised bit).
    pub headline: Metric,
    /// Every metric, in display order.
    pub metrics: Vec<Metric>,
}

impl CostSummary {
    /// The value of the metric called `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// A complexity-cost plugin. See the [module docs](self) for an example.
pub trait ComplexityCost: Send + Sync + fmt::Debug {
    /// The registry id.
    fn id(&self) -> &str;

    /// Tells the cost the network's layers outside the search (the full-precision stem and
    /// classifier, [`Graph::fixed_layers`](crate::graph::Graph::fixed_layers)) once, before
    /// it is used; a cost that counts them in its summary keeps them. Default: ignored.
    fn set_fixed_layers(&mut self, _fixed: &[LayerInfo]) {}

    /// Checks that the cost can price every layer at every bit width the run may use
    /// (`bits[i]` = (weight candidates, activation candidates) of layer `i`: the search's
    /// candidates, or the one fixed pair), so a missing entry fails before training, naming
    /// what is missing. Default: every layer and bit width is priced.
    fn validate(&self, _layers: &[LayerInfo], _bits: &[(Vec<u32>, Vec<u32>)]) -> Result<()> {
        Ok(())
    }

    /// Differentiable cost of one layer under relaxed activation and weight bit distributions.
    fn layer_cost(&self, layer: &LayerInfo, act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor>;

    /// The network-level normaliser the summed layer costs are divided by.
    fn normalizer(&self, layers: &[LayerInfo]) -> f64;

    /// The network's relaxed cost: layer costs summed in order (from 0), divided by
    /// [`normalizer`](Self::normalizer).
    fn network_cost(&self, layers: &[LayerInfo], costs: &[Tensor]) -> Result<Tensor> {
        let norm = self.normalizer(layers);
        let mut it = costs.iter();
        let Some(first) = it.next() else {
            return Err(crate::Error::msg(format!("cost `{}`: the network has no searchable layers", self.id())));
        };
        let mut acc = first.clone();
        for c in it {
            acc = acc.add(c)?;
        }
        Ok((acc / norm)?)
    }

    /// The network's differentiable complexity: [`layer_cost`](Self::layer_cost) of every
    /// searchable layer under its `(activation, weight)` distributions, then
    /// [`network_cost`](Self::network_cost). This is the term the search loss adds, times `cd`.
    fn complexity(&self, layers: &[LayerInfo], dists: &[(BitDistribution, BitDistribution)]) -> Result<Tensor> {
        if layers.len() != dists.len() {
            return Err(crate::Error::msg(format!(
                "cost `{}`: {} searchable layers but {} bit distributions",
                self.id(),
                layers.len(),
                dists.len()
            )));
        }
        let costs: Vec<Tensor> =
            layers.iter().zip(dists).map(|(l, (a, w))| self.layer_cost(l, a, w)).collect::<Result<_>>()?;
        self.network_cost(layers, &costs)
    }

    /// Exact cost of one layer at fixed bits (fractional bits give the expected-value cost).
    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64;

    /// Summary of a whole allocation (one entry of `bits` per layer).
    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary;
}
