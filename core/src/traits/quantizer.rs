//! The [`Quantizer`] trait: maps a tensor to its quantized value at a given bit width, with a
//! straight-through gradient.
//!
//! A quantizer serves one or both [`Operand`]s (EdMIPS: `hwgq` for activations, `gauss` for
//! weights). Search needs the *mixture* `Σ_i p_i · Q_{b_i}(x)` over candidate bit widths; the
//! default [`Quantizer::mix`] composes [`Quantizer::quantize`] so a new plugin works without
//! writing a kernel. Built-ins override `mix` with a fused custom op
//! ([`crate::ops::mixture`]) that does the whole mixture in one pass forward and one pass
//! backward (dx and dp), on CPU and CUDA. A quantizer after a train-mode batch norm may also
//! fuse that batch norm into its mixture ([`Quantizer::mix_batch_norm`]; HWGQ does, on the CPU).
//!
//! # Learnable quantizers
//!
//! A quantizer may own learnable parameters in every layer it serves (LSQ's step, PACT's
//! clip): it declares them per operand and bit width with [`Quantizer::params`], and the
//! network creates them when it builds the layer, one set per candidate bit width, named
//! `<layer>.<act_quant|weight_quant>.<name>.b<bits>` (for example
//! `layer2.0.conv1.act_quant.step.b2`), in the [`Quant`](crate::param_store::ParamGroup::Quant)
//! optimiser group. They are saved in checkpoints like every other tensor, and handed back to
//! [`quantize`](Quantizer::quantize) and [`mix`](Quantizer::mix) as `learned`. A parameter
//! declared with `data_init` is set from the first batch the layer sees
//! ([`Quantizer::init_from_data`]); the layer records that in a buffer
//! `<layer>.<act_quant|weight_quant>.initialized` so a resumed run does not initialise again.
//! Parameter-free quantizers (the EdMIPS ones) declare nothing and ignore `learned`.
//!
//! # Example: a plugin quantizer
//!
//! ```
//! use edmips_core::candle::Tensor;
//! use edmips_core::{Operand, Quantizer, Result, Error};
//!
//! /// Sign binarisation of weights with an identity straight-through gradient.
//! #[derive(Debug)]
//! struct Sign;
//!
//! impl Quantizer for Sign {
//!     fn id(&self) -> &str { "sign" }
//!     fn check(&self, operand: Operand, bits: u32) -> Result<()> {
//!         if operand == Operand::Weight && bits == 1 { Ok(()) } else {
//!             Err(Error::UnsupportedBits { quantizer: "sign".into(), operand: operand.to_string(),
//!                 bits, expected: "1-bit weights only".into() })
//!         }
//!     }
//!     fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, _learned: &[Tensor]) -> Result<Tensor> {
//!         self.check(operand, bits)?;
//!         // value: sign(x); gradient: identity (x + (sign(x) - x).detach()).
//!         let q = x.sign()?;
//!         Ok(x.add(&q.sub(x)?.detach())?)
//!     }
//! }
//!
//! let x = Tensor::new(&[-0.5f32, 0.25], &edmips_core::candle::Device::Cpu).unwrap();
//! let y = Sign.quantize(&x, Operand::Weight, 1, &[]).unwrap();
//! assert_eq!(y.to_vec1::<f32>().unwrap(), vec![-1.0, 1.0]);
//! ```

use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ops::batch_norm::BatchNormParams;
use crate::traits::quant_export::QuantExport;

/// The tensor a quantizer is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operand {
    /// A layer's weight tensor (OIHW).
    Weight,
    /// A layer's input activation (NCHW).
    Activation,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Weight => "weight",
            Operand::Activation => "activation",
        })
    }
}

/// One learnable parameter a quantizer owns per layer, operand and bit width.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParam {
    /// Name within the quantizer, e.g. `step`; the network's full name is
    /// `<layer>.<act_quant|weight_quant>.<name>.b<bits>`.
    pub name: String,
    /// Shape of the tensor (`[1]` for a scalar).
    pub shape: Vec<usize>,
    /// Every element's value when created (before any data-dependent initialisation).
    pub init: f32,
    /// Whether [`Quantizer::init_from_data`] sets it from the first batch.
    pub data_init: bool,
}

impl QuantParam {
    /// A scalar (`[1]`) parameter.
    pub fn scalar(name: impl Into<String>, init: f32, data_init: bool) -> Self {
        QuantParam { name: name.into(), shape: vec![1], init, data_init }
    }
}

/// The suffix of a learnable parameter's name in a layer: `<operand prefix>.<name>.b<bits>`.
pub fn learned_param_name(operand: Operand, name: &str, bits: u32) -> String {
    format!("{}.{name}.b{bits}", operand_prefix(operand))
}

/// The name prefix of a layer's quantizer state for `operand`: `act_quant` or `weight_quant`.
pub fn operand_prefix(operand: Operand) -> &'static str {
    match operand {
        Operand::Activation => "act_quant",
        Operand::Weight => "weight_quant",
    }
}

/// A quantizer plugin. See the [module docs](self) for an example.
pub trait Quantizer: Send + Sync + fmt::Debug {
    /// The registry id.
    fn id(&self) -> &str;

    /// `Ok(())` if this quantizer supports `bits` for `operand`, else an
    /// [`Error::UnsupportedBits`](crate::Error::UnsupportedBits) saying what is supported.
    fn check(&self, operand: Operand, bits: u32) -> Result<()>;

    /// The learnable parameters this quantizer owns in a layer for `operand` at `bits`
    /// (default: none). Called once per candidate bit width when a layer is built.
    fn params(&self, _operand: Operand, _bits: u32) -> Vec<QuantParam> {
        Vec::new()
    }

    /// The initial values of the [`params`](Quantizer::params) at `bits` (in declared order,
    /// each of its declared shape) from the first input `x` the layer sees (the activation, or
    /// the weight), for the parameters declared with `data_init`; the others keep their value.
    /// `x` is detached. Default: no data-dependent initialisation.
    fn init_from_data(&self, _x: &Tensor, _operand: Operand, _bits: u32) -> Result<Vec<Tensor>> {
        Ok(Vec::new())
    }

    /// The quantized `x`. Its gradient is the quantizer's straight-through rule (and, for a
    /// learnable quantizer, its rule for the parameters). `learned` holds this layer's
    /// parameters for (`operand`, `bits`) in the order [`params`](Quantizer::params) declared
    /// them; it is empty for a parameter-free quantizer.
    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, learned: &[Tensor]) -> Result<Tensor>;

    /// The mixture `Σ_i probs[i] · Q_{bits[i]}(x)`, summed in index order from 0.
    ///
    /// `probs` is a rank-1 tensor of `bits.len()` mixing weights; gradients flow to `x` and
    /// `probs` (and to the learned parameters). `learned[i]` are the parameters of candidate
    /// `i` (empty, or all empty, for a parameter-free quantizer). The default composes
    /// [`quantize`](Quantizer::quantize); override it with a fused op for speed.
    fn mix(
        &self,
        x: &Tensor,
        operand: Operand,
        bits: &[u32],
        probs: &Tensor,
        learned: &[Vec<Tensor>],
    ) -> Result<Tensor> {
        compose_mixture(self, x, operand, bits, probs, learned)
    }

    /// Whether [`mix`](Quantizer::mix) is a fused kernel (reported by `edmips list`).
    fn has_fused_mix(&self) -> bool {
        false
    }

    /// The mixture of a train-mode batch norm's output, `mix(batch_norm_train(x))`, as one
    /// fused op; `Ok(None)` (the default) lets the network run the two one after the other.
    ///
    /// The network asks for it in train mode where a batch norm's output feeds only this
    /// quantizer's layer (the EdMIPS blocks' `bn → quantized conv`) and the layer has no
    /// data-initialised parameters; a fixed-bit layer asks with its one bit width and
    /// `probs = [1]`, and the result must then be `quantize(batch_norm_train(x))`. An
    /// implementation gives the composition's values and gradients (to `x`, the batch norm's
    /// scale and shift, `probs` and `learned`) and updates the running statistics as
    /// [`batch_norm_train`](crate::ops::batch_norm::batch_norm_train) does; `bn_name` labels
    /// errors. A per-element quantizer gets all of that from
    /// [`batch_norm_mixture`](crate::ops::bn_mixture::batch_norm_mixture) (CPU; it answers
    /// `None` elsewhere).
    #[allow(clippy::too_many_arguments)]
    fn mix_batch_norm(
        &self,
        x: &Tensor,
        bn: &BatchNormParams,
        bn_name: &str,
        operand: Operand,
        bits: &[u32],
        probs: &Tensor,
        learned: &[Vec<Tensor>],
    ) -> Result<Option<Tensor>> {
        let _ = (x, bn, bn_name, operand, bits, probs, learned);
        Ok(None)
    }

    /// How an exported graph (`edmips export`: QONNX, plain ONNX) writes this quantizer at
    /// `bits` ([`QuantExport`]), or `None` when it has no such description, which makes export
    /// fail with an error naming the plugin. `x` is the weight tensor for
    /// [`Operand::Weight`] (a weight description may depend on it, e.g. a step scaled by its
    /// std) and `None` for activations (the description must hold for every input).
    /// `learned` are the layer's learned parameters for (`operand`, `bits`), as
    /// [`quantize`](Quantizer::quantize) gets them (LSQ's step is its scale). The default is
    /// `None`.
    fn export_form(
        &self,
        operand: Operand,
        bits: u32,
        x: Option<&Tensor>,
        learned: &[Tensor],
    ) -> Result<Option<QuantExport>> {
        let _ = (operand, bits, x, learned);
        Ok(None)
    }
}

/// The composed mixture `0 + p_0·Q_0(x) + p_1·Q_1(x) + ...`: the default of [`Quantizer::mix`],
/// public so fused implementations can be tested against it.
pub fn compose_mixture<Q: Quantizer + ?Sized>(
    q: &Q,
    x: &Tensor,
    operand: Operand,
    bits: &[u32],
    probs: &Tensor,
    learned: &[Vec<Tensor>],
) -> Result<Tensor> {
    if probs.dims() != [bits.len()] {
        return Err(crate::Error::Shape {
            context: format!("{} mixture weights", q.id()),
            expected: format!("[{}]", bits.len()),
            found: format!("{:?}", probs.dims()),
        });
    }
    if !learned.is_empty() && learned.len() != bits.len() {
        return Err(crate::Error::Shape {
            context: format!("{} learned parameters", q.id()),
            expected: format!("one set per candidate ({})", bits.len()),
            found: format!("{} sets", learned.len()),
        });
    }
    let mut acc = x.zeros_like()?.to_dtype(DType::F32)?;
    for (i, &b) in bits.iter().enumerate() {
        let qi = q.quantize(x, operand, b, learned.get(i).map(Vec::as_slice).unwrap_or(&[]))?;
        let pi = probs.narrow(0, i, 1)?;
        acc = acc.add(&qi.broadcast_mul(&pi)?)?;
    }
    Ok(acc)
}
