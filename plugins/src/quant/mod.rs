//! Quantizers: [`hwgq`] (activations), [`gauss`] and [`dorefa`] (weights).

pub mod dorefa;
pub mod gauss;
pub mod hwgq;

use edmips_core::{Error, Operand};

/// The error for an unsupported (operand, bits) pair.
pub(crate) fn unsupported(id: &str, operand: Operand, bits: u32, expected: &str) -> Error {
    Error::UnsupportedBits {
        quantizer: id.to_string(),
        operand: operand.to_string(),
        bits,
        expected: expected.to_string(),
    }
}
