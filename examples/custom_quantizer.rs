//! Writing a quantizer plugin end to end: a uniform activation quantizer with a fixed clip
//! (PACT-style with a constant `clip` parameter), with a fused mixture kernel for CPU and CUDA,
//! registered by id, built from a config table and used in a searchable convolution.
//!
//! `cargo run --release --example custom_quantizer`

use std::sync::Arc;

use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::layers::MixedConv;
use edmips::core::ops::mixture::{mixture, ElementQuantizer};
use edmips::core::{parse_params, Error, LayerInfo, LayerKind, Table};
use edmips::plugins::{Gauss, Softmax};
use edmips::{registry, Operand, PluginSpec, Quantizer, RelaxContext, Result};
use serde::{Deserialize, Serialize};

/// The registry id, written once.
const ID: &str = "uniform_act";

/// `y = round(clamp(x, 0, clip) / s) · s` with `s = clip / (2^b - 1)`; STE masked by the clip.
#[derive(Debug)]
struct UniformAct {
    clip: f32,
}

/// The plugin's parameters, written once: names, types and defaults (what `edmips list` shows).
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct UniformActParams {
    /// The clip value of the activations.
    clip: f64,
}

impl Default for UniformActParams {
    fn default() -> Self {
        UniformActParams { clip: 2.0 }
    }
}

/// The per-element function; branch parameters are `[step, clip]`.
struct UniformElement;

impl ElementQuantizer for UniformElement {
    const NAME: &'static str = "example_uniform_act";
    const PARAMS: usize = 2;
    const CUDA_SOURCE: &'static str = include_str!("custom_quantizer.cu");
    fn q(x: f32, p: &[f32]) -> f32 {
        (x.clamp(0.0, p[1]) / p[0]).round_ties_even() * p[0]
    }
    fn ste(x: f32, p: &[f32]) -> f32 {
        f32::from(u8::from((0.0..=p[1]).contains(&x)))
    }
}

// Lets the NVRTC check compile this kernel too.
edmips::core::register_kernel_source!(UniformElement);

impl UniformAct {
    fn params(&self, bits: &[u32], dev: &Device) -> Result<Tensor> {
        let mut v = Vec::new();
        for &b in bits {
            self.check(Operand::Activation, b)?;
            v.extend([self.clip / ((1u32 << b) - 1) as f32, self.clip]);
        }
        Ok(Tensor::from_vec(v, (bits.len(), 2), dev)?)
    }
}

impl Quantizer for UniformAct {
    fn id(&self) -> &str {
        ID
    }
    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        if operand == Operand::Activation && (1..=8).contains(&bits) {
            Ok(())
        } else {
            Err(Error::UnsupportedBits {
                quantizer: ID.into(),
                operand: operand.to_string(),
                bits,
                expected: "activations with 1 to 8 bits".into(),
            })
        }
    }
    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32) -> Result<Tensor> {
        self.check(operand, bits)?;
        mixture::<UniformElement>(x, &Tensor::ones(1, x.dtype(), x.device())?, &self.params(&[bits], x.device())?)
    }
    fn mix(&self, x: &Tensor, _operand: Operand, bits: &[u32], probs: &Tensor) -> Result<Tensor> {
        mixture::<UniformElement>(x, probs, &self.params(bits, x.device())?)
    }
    fn has_fused_mix(&self) -> bool {
        true
    }
}

fn build(t: &Table) -> Result<Box<dyn Quantizer>> {
    let clip = parse_params::<UniformActParams>(ID, t)?.clip;
    if clip <= 0.0 {
        return Err(Error::config(ID, "clip", "must be positive"));
    }
    Ok(Box::new(UniformAct { clip: clip as f32 }))
}

edmips::core::register_quantizer! {
    id: ID,
    summary: "Example: uniform activation quantizer with a fixed clip",
    params: UniformActParams,
    build: build,
}

fn main() -> Result<()> {
    edmips::link_builtins();
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
    };
    layer.validate()?;
    let x = Tensor::randn(0f32, 1.0, (2, 8, 12, 12), &dev)?;
    let out = layer.forward(&x, &RelaxContext::default())?;
    let grads = out.y.sqr()?.mean_all()?.backward()?;
    let ga = grads.get(layer.alpha_activ.as_tensor()).ok_or_else(|| Error::msg("no gradient"))?;
    println!("output {:?}; d loss / d alpha_activ = {:?}", out.y.dims(), ga.to_vec1::<f32>()?);
    Ok(())
}
