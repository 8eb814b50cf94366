//! A complexity-cost plugin: memory traffic, the bits a layer reads per sample (its weights
//! and its input feature map), usable as a differentiable search cost, with a summary of a
//! discrete allocation.
//!
//! Per layer: `param_size·1e3 · E[wbit] + memory_size · E[abit]` Kbit; the network's sum is
//! normalised by the same sum at 8-bit weights and activations.

use edmips::core::candle::Tensor;
use edmips::core::{CostSummary, LayerBits, LayerInfo, Metric, Params, Table};
use edmips::{BitDistribution, ComplexityCost, Result};

/// The registry id, written once.
pub const ID: &str = "memory_traffic";

/// Weight plus activation bits read per sample, in Kbit.
#[derive(Debug)]
pub struct MemoryTraffic;

impl MemoryTraffic {
    /// `(weight Kbit, activation Kbit)` of one layer at `bits`.
    fn parts(layer: &LayerInfo, bits: LayerBits) -> (f64, f64) {
        (layer.param_size() * 1e3 * bits.wbit, layer.memory_size() as f64 * bits.abit)
    }
}

impl ComplexityCost for MemoryTraffic {
    fn id(&self) -> &str {
        ID
    }
    fn layer_cost(&self, layer: &LayerInfo, act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        let w = weight.expected()?.affine(layer.param_size() * 1e3, 0.0)?;
        Ok(w.add(&act.expected()?.affine(layer.memory_size() as f64, 0.0)?)?)
    }
    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        layers.iter().map(|l| self.discrete_cost(l, LayerBits { wbit: 8.0, abit: 8.0 })).sum()
    }
    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        let (w, a) = Self::parts(layer, bits);
        w + a
    }
    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let (w, a) =
            layers.iter().zip(bits).map(|(l, b)| Self::parts(l, *b)).fold((0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1));
        let total = Metric::new("traffic_kbit", w + a, "Kbit");
        CostSummary {
            headline: total.clone(),
            metrics: vec![total, Metric::new("weight_kbit", w, "Kbit"), Metric::new("activation_kbit", a, "Kbit")],
        }
    }
}

fn build(t: &Table) -> Result<Box<dyn ComplexityCost>> {
    Params::new(ID, t).deny_unknown(&[])?;
    Ok(Box::new(MemoryTraffic))
}

edmips::core::register_cost! {
    id: ID,
    summary: "Example: weight + input activation bits read per sample (Kbit), normalised by the 8-bit network",
    build: build,
}
