//! Quantizers: [`hwgq`] (activations), [`gauss`] and [`dorefa`] (weights), and the learnable
//! [`lsq`] (both) and [`pact`] (activations).

pub mod dorefa;
pub mod gauss;
pub mod hwgq;
pub mod lsq;
pub mod pact;

use edmips_core::candle::{DType, Device, Tensor};
use edmips_core::ops::consts::cached;
use edmips_core::{Error, Operand, Result};

/// The one-branch mixing weight `[1.0]` on `device` (built once per device).
pub(crate) fn one(device: &Device) -> Result<Tensor> {
    cached(device, "quant.one", &[], |d| Ok(Tensor::ones(1, DType::F32, d)?))
}

/// The error for an unsupported (operand, bits) pair.
pub(crate) fn unsupported(id: &str, operand: Operand, bits: u32, expected: &str) -> Error {
    Error::UnsupportedBits {
        quantizer: id.to_string(),
        operand: operand.to_string(),
        bits,
        expected: expected.to_string(),
    }
}
