//! Writing a complexity-cost plugin end to end: model size (weight memory in Mbit), registered
//! by id, used as a differentiable search cost and to summarise a discrete allocation.
//!
//! `cargo run --release --example custom_cost`

use edmips::core::candle::{DType, Device, Tensor, Var};
use edmips::core::{CostSummary, Error, LayerBits, LayerInfo, LayerKind, Metric, Params, Table};
use edmips::{registry, BitDistribution, ComplexityCost, PluginSpec, RelaxContext, Result};

/// The registry id, written once.
const ID: &str = "model_size";

/// Weight memory: `param_size · E[wbit]` Mbit per layer, normalised by the 32-bit model size.
#[derive(Debug)]
struct ModelSize;

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

fn conv(index: usize, cin: usize, cout: usize, hw: usize) -> LayerInfo {
    LayerInfo {
        index,
        name: format!("conv{index}"),
        kind: LayerKind::Conv2d,
        in_channels: cin,
        out_channels: cout,
        kernel: (3, 3),
        stride: (1, 1),
        padding: [1; 4],
        input_hw: (hw, hw),
        output_hw: (hw, hw),
    }
}

fn main() -> Result<()> {
    edmips::link_builtins();
    let cost = registry::build_cost(&PluginSpec::new("model_size"))?;
    let softmax = registry::build_relaxation(&PluginSpec::new("softmax"))?;
    let layers = vec![conv(0, 16, 32, 32), conv(1, 32, 64, 16)];
    let dev = Device::Cpu;
    let ctx = RelaxContext::default();
    // Relaxed cost of two layers whose weight-bit logits are learnable; activations fixed at 8 bits.
    let mut logits = Vec::new();
    let mut per_layer = Vec::new();
    for l in &layers {
        let z = Var::new(softmax.init_logits(4).as_slice(), &dev)?;
        let w = BitDistribution { bits: vec![1, 2, 3, 4], probs: softmax.weights(z.as_tensor(), &ctx)? };
        let a = BitDistribution { bits: vec![8], probs: Tensor::ones(1, DType::F32, &dev)? };
        per_layer.push(cost.layer_cost(l, &a, &w)?);
        logits.push(z);
    }
    let c = cost.network_cost(&layers, &per_layer)?;
    let grads = c.backward()?;
    let g1 = grads.get(logits[1].as_tensor()).ok_or_else(|| Error::msg("no gradient"))?;
    println!("relaxed {} = {:.5} of the 32-bit model", cost.id(), c.to_scalar::<f32>()?);
    println!("d cost / d weight-bit logits of conv1 = {:?}", g1.to_vec1::<f32>()?);
    let s = cost.summarize(&layers, &[LayerBits { wbit: 2.0, abit: 8.0 }, LayerBits { wbit: 4.0, abit: 8.0 }]);
    for m in &s.metrics {
        println!("{}: {:.4} {}", m.name, m.value, m.unit);
    }
    Ok(())
}
