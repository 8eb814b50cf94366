//! The [`Quantizer`] trait: maps a tensor to its quantized value at a given bit width, with a
//! straight-through gradient.
//!
//! A quantizer serves one or both [`Operand`]s (EdMIPS: `hwgq` for activations, `gauss` for
//! weights). Search needs the *mixture* `Σ_i p_i · Q_{b_i}(x)` over candidate bit widths; the
//! default [`Quantizer::mix`] composes [`Quantizer::quantize`] so a new plugin works without
//! writing a kernel. Built-ins override `mix` with a fused custom op
//! ([`crate::ops::mixture`]) that does the whole mixture in one pass forward and one pass
//! backward (dx and dp), on CPU and CUDA.
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
//!     fn quantize(&self, x: &Tensor, operand: Operand, bits: u32) -> Result<Tensor> {
//!         self.check(operand, bits)?;
//!         // value: sign(x); gradient: identity (x + (sign(x) - x).detach()).
//!         let q = x.sign()?;
//!         Ok(x.add(&q.sub(x)?.detach())?)
//!     }
//! }
//!
//! let x = Tensor::new(&[-0.5f32, 0.25], &edmips_core::candle::Device::Cpu).unwrap();
//! let y = Sign.quantize(&x, Operand::Weight, 1).unwrap();
//! assert_eq!(y.to_vec1::<f32>().unwrap(), vec![-1.0, 1.0]);
//! ```

use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
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

/// A quantizer plugin. See the [module docs](self) for an example.
pub trait Quantizer: Send + Sync + fmt::Debug {
    /// The registry id.
    fn id(&self) -> &str;

    /// `Ok(())` if this quantizer supports `bits` for `operand`, else an
    /// [`Error::UnsupportedBits`](crate::Error::UnsupportedBits) saying what is supported.
    fn check(&self, operand: Operand, bits: u32) -> Result<()>;

    /// The quantized `x`. Its gradient is the quantizer's straight-through rule.
    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32) -> Result<Tensor>;

    /// The mixture `Σ_i probs[i] · Q_{bits[i]}(x)`, summed in index order from 0.
    ///
    /// `probs` is a rank-1 tensor of `bits.len()` mixing weights; gradients flow to `x` and
    /// `probs`. The default composes [`quantize`](Quantizer::quantize); override it with a
    /// fused op for speed.
    fn mix(&self, x: &Tensor, operand: Operand, bits: &[u32], probs: &Tensor) -> Result<Tensor> {
        compose_mixture(self, x, operand, bits, probs)
    }

    /// Whether [`mix`](Quantizer::mix) is a fused kernel (reported by `edmips list`).
    fn has_fused_mix(&self) -> bool {
        false
    }

    /// How an exported graph (`edmips export`: QONNX, plain ONNX) writes this quantizer at
    /// `bits` ([`QuantExport`]), or `None` when it has no such description, which makes export
    /// fail with an error naming the plugin. `x` is the weight tensor for
    /// [`Operand::Weight`] (a weight description may depend on it, e.g. a step scaled by its
    /// std) and `None` for activations (the description must hold for every input). The
    /// default is `None`.
    fn export_form(&self, operand: Operand, bits: u32, x: Option<&Tensor>) -> Result<Option<QuantExport>> {
        let _ = (operand, bits, x);
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
) -> Result<Tensor> {
    if probs.dims() != [bits.len()] {
        return Err(crate::Error::Shape {
            context: format!("{} mixture weights", q.id()),
            expected: format!("[{}]", bits.len()),
            found: format!("{:?}", probs.dims()),
        });
    }
    let mut acc = x.zeros_like()?.to_dtype(DType::F32)?;
    for (i, &b) in bits.iter().enumerate() {
        let qi = q.quantize(x, operand, b)?;
        let pi = probs.narrow(0, i, 1)?;
        acc = acc.add(&qi.broadcast_mul(&pi)?)?;
    }
    Ok(acc)
}
