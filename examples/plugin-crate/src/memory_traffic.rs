//! A complexity-cost plugin: model size (weight memory in Mbit), usable as a differentiable
//! search cost, with a summary of a discrete allocation.

use edmips::core::candle::Tensor;
use edmips::core::{CostSummary, LayerBits, LayerInfo, Metric, Params, Table};
use edmips::{BitDistribution, ComplexityCost, Result};

/// The registry id, written once.
pub const ID: &str = "model_size";

/// Weight memory: `param_size · E[wbit]` Mbit per layer, normalised by the 32-bit model size.
#[derive(Debug)]
pub struct ModelSize;

impl ComplexityCost for ModelSize {
    fn id(&self) -> &str {
        ID
    }
    fn layer_cost(&self, layer: &LayerInfo, _act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        Ok(weight.expected()?.affine(layer.param_size(), 0.0)?)
    }
    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        layers.iter().map(|l| l.param_size() * 32.0).sum()
    }
    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        layer.param_size() * bits.wbit
    }
    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let mbit: f64 = layers.iter().zip(bits).map(|(l, b)| self.discrete_cost(l, *b)).sum();
        let params: f64 = layers.iter().map(|l| l.param_size()).sum();
        CostSummary {
            headline: Metric::new("mean_wbit", mbit / params, "bit"),
            metrics: vec![Metric::new("size", mbit, "Mbit"), Metric::new("mean_wbit", mbit / params, "bit")],
        }
    }
}

fn build(t: &Table) -> Result<Box<dyn ComplexityCost>> {
    Params::new(ID, t).deny_unknown(&[])?;
    Ok(Box::new(ModelSize))
}

edmips::core::register_cost! {
    id: ID,
    summary: "Example: weight memory in Mbit, normalised by the 32-bit model",
    build: build,
}
