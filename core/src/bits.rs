//! Bit widths and the rules that decide which ones a layer may use, in one place.
//!
//! A bit width is a `u32` everywhere it travels (configurations, arch files, the quantizer
//! API); [`Precision`] is what it *means*: 1..=31 quantized, exactly
//! [`FULL_PRECISION_BITS`] (32) full precision, anything else invalid. Every check of a
//! layer's bits goes through [`check_layer_bits`] (a fixed allocation) or
//! [`check_candidates`] (a search's candidate lists), so the network builder, the layers,
//! the arch-file reader and `edmips inspect` apply the same rule.

use std::fmt;

use crate::error::{Error, Result};
use crate::traits::{Operand, Quantizer};

/// The bit width that means "not quantized": the activation quantizer's full-precision form
/// (HWGQ: ReLU) and an unquantized weight.
pub const FULL_PRECISION_BITS: u32 = 32;

/// What a bit width means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Quantized to this many bits (1..=31).
    Quantized(u32),
    /// Full precision ([`FULL_PRECISION_BITS`]).
    Full,
}

impl Precision {
    /// The meaning of `bits`, or an error for 0 and widths above [`FULL_PRECISION_BITS`].
    pub fn of(bits: u32) -> Result<Self> {
        match bits {
            FULL_PRECISION_BITS => Ok(Precision::Full),
            1..FULL_PRECISION_BITS => Ok(Precision::Quantized(bits)),
            _ => Err(Error::msg(format!(
                "bit width {bits} is not valid: expected 1..={} bits, or {FULL_PRECISION_BITS} for full precision",
                FULL_PRECISION_BITS - 1
            ))),
        }
    }

    /// Whether `bits` means full precision.
    pub fn is_full(bits: u32) -> bool {
        bits == FULL_PRECISION_BITS
    }

    /// The bit width this stands for.
    pub fn bits(self) -> u32 {
        match self {
            Precision::Quantized(b) => b,
            Precision::Full => FULL_PRECISION_BITS,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::Quantized(b) => write!(f, "{b} bits"),
            Precision::Full => f.write_str("full precision"),
        }
    }
}

/// Checks a fixed `(wbit, abit)` pair: the activation width must be one `act` supports (its
/// full-precision form included); the weight width one `weight` supports, or full precision
/// (the weight is then left unquantized, decisions.md D7).
pub fn check_layer_bits(wbit: u32, abit: u32, act: &dyn Quantizer, weight: &dyn Quantizer) -> Result<()> {
    Precision::of(abit)?;
    act.check(Operand::Activation, abit)?;
    match Precision::of(wbit)? {
        Precision::Full => Ok(()),
        Precision::Quantized(_) => weight.check(Operand::Weight, wbit),
    }
}

/// Checks a search's candidate lists: both non-empty, no width listed twice (two logits for
/// one width would split its probability and skew the expected bits), and every width
/// supported by its quantizer (full precision is the quantizer's call).
pub fn check_candidates(wbits: &[u32], abits: &[u32], act: &dyn Quantizer, weight: &dyn Quantizer) -> Result<()> {
    if wbits.is_empty() || abits.is_empty() {
        return Err(Error::msg("search mode needs at least one weight and one activation bit candidate"));
    }
    for (what, list) in [("weight", wbits), ("activation", abits)] {
        if let Some((i, b)) = list.iter().enumerate().find(|(i, b)| list[..*i].contains(b)) {
            return Err(Error::msg(format!(
                "{what} bit candidates {list:?} list {b} twice (at positions {} and {i}); each width may appear once",
                list.iter().position(|x| x == b).unwrap_or(0)
            )));
        }
    }
    for &b in abits {
        Precision::of(b)?;
        act.check(Operand::Activation, b)?;
    }
    for &b in wbits {
        Precision::of(b)?;
        weight.check(Operand::Weight, b)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_thirty_two_means_full_precision() {
        assert_eq!(Precision::of(32).unwrap(), Precision::Full);
        assert_eq!(Precision::of(4).unwrap(), Precision::Quantized(4));
        for b in [0, 33, 64] {
            let e = Precision::of(b).unwrap_err().to_string();
            assert!(e.contains(&b.to_string()) && e.contains("full precision"), "{e}");
        }
        assert!(Precision::is_full(32) && !Precision::is_full(64));
        assert_eq!(Precision::Full.bits(), 32);
    }

    #[derive(Debug)]
    struct Any;
    impl Quantizer for Any {
        fn id(&self) -> &str {
            "any"
        }
        fn check(&self, _: Operand, _: u32) -> Result<()> {
            Ok(())
        }
        fn quantize(
            &self,
            x: &candle_core::Tensor,
            _: Operand,
            _: u32,
            _: &[candle_core::Tensor],
        ) -> Result<candle_core::Tensor> {
            Ok(x.clone())
        }
    }

    #[test]
    fn a_candidate_listed_twice_is_an_error() {
        check_candidates(&[1, 2, 3, 4], &[2, 3, 4], &Any, &Any).unwrap();
        let e = check_candidates(&[1, 2, 2], &[2], &Any, &Any).unwrap_err().to_string();
        assert!(e.contains("weight bit candidates [1, 2, 2]") && e.contains("twice"), "{e}");
        let e = check_candidates(&[1], &[4, 3, 4], &Any, &Any).unwrap_err().to_string();
        assert!(e.contains("activation") && e.contains("positions 0 and 2"), "{e}");
    }
}
