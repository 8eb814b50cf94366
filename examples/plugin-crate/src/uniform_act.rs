//! A quantizer plugin: a uniform activation quantizer with a fixed clip (PACT-style with a
//! constant `clip` parameter), with a fused mixture kernel for CPU and CUDA (`uniform_act.cu`),
//! the batch norm in front fused into it on the CPU (`mix_batch_norm`), registered by id with
//! typed parameters.

use edmips::core::candle::{Device, Tensor};
use edmips::core::ops::batch_norm::BatchNormParams;
use edmips::core::ops::bn_mixture::batch_norm_mixture;
use edmips::core::ops::mixture::{mixture, ElementQuantizer};
use edmips::core::{parse_params, Error, Table};
use edmips::{Operand, Quantizer, Result};

/// The registry id, written once.
pub const ID: &str = "uniform_act";

/// `y = round(clamp(x, 0, clip) / s) · s` with `s = clip / (2^b - 1)`; STE masked by the clip.
#[derive(Debug)]
pub struct UniformAct {
    /// The clip value.
    pub clip: f32,
}

edmips::core::plugin_params! {
    /// The plugin's parameters, written once: names, types, defaults and docs (what `edmips
    /// list` shows).
    pub struct UniformActParams {
        /// The clip value of the activations.
        pub clip: f64 = 2.0,
    }
}

/// The per-element function; branch parameters are `[step, clip]`.
pub struct UniformElement;

impl ElementQuantizer for UniformElement {
    const NAME: &'static str = "example_uniform_act";
    const PARAMS: usize = 2;
    const CUDA_SOURCE: &'static str = include_str!("uniform_act.cu");
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
    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, _learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        mixture::<UniformElement>(x, &Tensor::ones(1, x.dtype(), x.device())?, &self.params(&[bits], x.device())?)
    }
    fn mix(
        &self,
        x: &Tensor,
        _operand: Operand,
        bits: &[u32],
        probs: &Tensor,
        _learned: &[Vec<Tensor>],
    ) -> Result<Tensor> {
        mixture::<UniformElement>(x, probs, &self.params(bits, x.device())?)
    }
    fn has_fused_mix(&self) -> bool {
        true
    }
    /// The batch norm in front, fused into the mixture on the CPU (train mode; the network
    /// falls back to batch norm then `mix` where this answers `None`).
    fn mix_batch_norm(
        &self,
        x: &Tensor,
        bn: &BatchNormParams,
        bn_name: &str,
        operand: Operand,
        bits: &[u32],
        probs: &Tensor,
        _learned: &[Vec<Tensor>],
    ) -> Result<Option<Tensor>> {
        for &b in bits {
            self.check(operand, b)?;
        }
        batch_norm_mixture::<UniformElement>(x, bn, bn_name, probs, &self.params(bits, x.device())?)
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
