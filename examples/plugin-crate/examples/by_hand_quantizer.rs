//! Using the `uniform_act` quantizer by hand: built by id from a config table, then mixed in a
//! searchable convolution with the built-in Gaussian weight quantizer.
//!
//! `cargo run --release -p edmips-example-plugins --example by_hand_quantizer`

use std::sync::Arc;

use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::layers::MixedConv;
use edmips::core::{Error, LayerInfo, LayerKind};
use edmips::plugins::{Gauss, Softmax};
use edmips::{registry, PluginSpec, Quantizer, RelaxContext, Result};

fn main() -> Result<()> {
    edmips::link_builtins();
    edmips_example_plugins::link();
    // Built by id from a config table, as an experiment file would name it.
    let spec: PluginSpec = toml::from_str("id = \"uniform_act\"\nclip = 3.0").map_err(|e| Error::msg(e.to_string()))?;
    let q: Arc<dyn Quantizer> = Arc::from(registry::build_quantizer(&spec)?);
    println!("built `{}` (fused mixture: {})", q.id(), q.has_fused_mix());

    // A searchable 3x3 conv mixing 2/4/8-bit activations of the new quantizer with the
    // built-in Gaussian weight quantizer.
    let dev = Device::Cpu;
    let info = LayerInfo {
        index: 0,
        name: "demo".into(),
        kind: LayerKind::Conv2d,
        in_channels: 8,
        out_channels: 16,
        kernel: (3, 3),
        stride: (1, 1),
        padding: [1; 4],
        input_hw: (12, 12),
        output_hw: (12, 12),
    };
    let layer = MixedConv {
        info,
        weight: Var::randn(0f32, 0.1, (16, 8, 3, 3), &dev)?,
        alpha_activ: Var::new(&[0.01f32; 3], &dev)?,
        alpha_weight: Var::new(&[0.01f32; 4], &dev)?,
        abits: vec![2, 4, 8],
        wbits: vec![1, 2, 3, 4],
        act_quantizer: q,
        weight_quantizer: Arc::new(Gauss),
        relaxation: Arc::new(Softmax::default()),
        act_learned: Default::default(),
        weight_learned: Default::default(),
    };
    layer.validate()?;
    let x = Tensor::randn(0f32, 1.0, (2, 8, 12, 12), &dev)?;
    let out = layer.forward(&x, &RelaxContext::default())?;
    let grads = out.y.sqr()?.mean_all()?.backward()?;
    let ga = grads.get(layer.alpha_activ.as_tensor()).ok_or_else(|| Error::msg("no gradient"))?;
    println!("output {:?}; d loss / d alpha_activ = {:?}", out.y.dims(), ga.to_vec1::<f32>()?);
    Ok(())
}
