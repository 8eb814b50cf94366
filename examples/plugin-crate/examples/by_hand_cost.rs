//! Using the `memory_traffic` cost by hand: a differentiable search cost over two layers, its
//! gradient, and the summary of a discrete allocation.
//!
//! `cargo run --release -p edmips-example-plugins --example by_hand_cost`

use edmips::core::candle::{DType, Device, Tensor, Var};
use edmips::core::{Error, LayerBits, LayerInfo, LayerKind};
use edmips::{registry, BitDistribution, PluginSpec, RelaxContext, Result};

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
    edmips_example_plugins::link();
    let cost = registry::build_cost(&PluginSpec::new("memory_traffic"))?;
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
    println!("relaxed {} = {:.5} of the 8-bit network", cost.id(), c.to_scalar::<f32>()?);
    println!("d cost / d weight-bit logits of conv1 = {:?}", g1.to_vec1::<f32>()?);
    let s = cost.summarize(&layers, &[LayerBits { wbit: 2.0, abit: 8.0 }, LayerBits { wbit: 4.0, abit: 8.0 }]);
    for m in &s.metrics {
        println!("{}: {:.4} {}", m.name, m.value, m.unit);
    }
    Ok(())
}
