//! How a quantizer is written in an exported graph: [`QuantExport`], returned by
//! [`Quantizer::export_form`](crate::Quantizer::export_form).
//!
//! The exporter (`edmips export`, QONNX and plain ONNX) never matches plugin ids: a quantizer
//! that can be exported describes itself as one of
//!
//! * [`QuantExport::Uniform`]: a uniform quantizer ([`UniformQuant`]), the semantics of QONNX's
//!   `Quant` node: `y = s · (round(clip(x/s + z, q_min, q_max)) − z)`, with the integer range
//!   `[q_min, q_max]` given by the bit width, signedness and narrowness;
//! * [`QuantExport::Relu`]: `max(x, 0)` (HWGQ's full-precision form);
//! * [`QuantExport::Identity`]: no quantization.
//!
//! What the description must reproduce depends on the operand:
//!
//! * **activations**: the formula must give the quantizer's output for *every* input, bit for
//!   bit in f32 (the description cannot depend on the data, so the exporter passes no tensor);
//! * **weights**: the description is computed from the weight tensor, and the quantizer's
//!   output `Q(W)` must lie on its grid, `Q(W) = s·(q − z)` for integers `q` in the range. The
//!   exporter stores `Q(W)` itself and puts the `Quant` node on it, where it is the identity.
//!   (Applied to the raw `W` it may break ties differently from the quantizer's own rounding:
//!   the Gaussian quantizer rounds `W/s + 0.5`, the node `W/s + 2^(b−1) − 0.5`.)

/// How an exported `Quant` rounds `x/s + z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even (`torch.round`, `f32::round_ties_even`, numpy's
    /// `np.round`, ONNX `Round`, QONNX `rounding_mode = "ROUND"`).
    HalfEven,
    /// Towards −∞ (QONNX `FLOOR`, ONNX `Floor`).
    Floor,
    /// Towards +∞ (QONNX `CEIL`, ONNX `Ceil`).
    Ceil,
}

impl Rounding {
    /// The QONNX `rounding_mode` attribute.
    pub fn qonnx_mode(self) -> &'static str {
        match self {
            Rounding::HalfEven => "ROUND",
            Rounding::Floor => "FLOOR",
            Rounding::Ceil => "CEIL",
        }
    }

    /// The standard ONNX operator that rounds this way.
    pub fn onnx_op(self) -> &'static str {
        match self {
            Rounding::HalfEven => "Round",
            Rounding::Floor => "Floor",
            Rounding::Ceil => "Ceil",
        }
    }

    /// Rounds `v` this way.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Rounding::HalfEven => v.round_ties_even(),
            Rounding::Floor => v.floor(),
            Rounding::Ceil => v.ceil(),
        }
    }
}

/// A uniform quantizer: `y = scale · (round(clip(x/scale + zero_point, q_min, q_max)) − zero_point)`
/// (QONNX `Quant`, clip then round, as its reference implementation does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniformQuant {
    /// The step `s` (f32, exactly as the quantizer uses it).
    pub scale: f32,
    /// The zero point `z` (need not be an integer: a mid-rise grid has a half-integer one).
    pub zero_point: f32,
    /// Bit width `b`: `2^b` integers (one fewer when `narrow`).
    pub bits: u32,
    /// Signed range `[−2^(b−1), 2^(b−1) − 1]` instead of `[0, 2^b − 1]`.
    pub signed: bool,
    /// Drop the most negative (signed) or the largest (unsigned) integer.
    pub narrow: bool,
    /// How `x/s + z` is rounded.
    pub rounding: Rounding,
}

impl UniformQuant {
    /// The integer range `(q_min, q_max)`, as QONNX defines it.
    pub fn int_range(&self) -> (i64, i64) {
        let b = self.bits as i64;
        match (self.signed, self.narrow) {
            (true, false) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
            (true, true) => (-(1i64 << (b - 1)) + 1, (1i64 << (b - 1)) - 1),
            (false, false) => (0, (1i64 << b) - 1),
            (false, true) => (0, (1i64 << b) - 2),
        }
    }

    /// The formula on one value, in f32 with the operations in the order QONNX's reference
    /// implementation performs them.
    pub fn apply(&self, x: f32) -> f32 {
        let (lo, hi) = self.int_range();
        let v = (x / self.scale + self.zero_point).clamp(lo as f32, hi as f32);
        (self.rounding.apply(v) - self.zero_point) * self.scale
    }
}

/// How an exported graph writes a quantizer at one bit width (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantExport {
    /// A uniform quantizer: a QONNX `Quant` node, or Div/Add/Clip/Round/Sub/Mul in plain ONNX.
    Uniform(UniformQuant),
    /// `max(x, 0)`: an ONNX `Relu`.
    Relu,
    /// The input unchanged: no node.
    Identity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges_follow_qonnx() {
        let q = |signed, narrow| UniformQuant {
            scale: 1.0,
            zero_point: 0.0,
            bits: 3,
            signed,
            narrow,
            rounding: Rounding::HalfEven,
        };
        assert_eq!(q(true, false).int_range(), (-4, 3));
        assert_eq!(q(true, true).int_range(), (-3, 3));
        assert_eq!(q(false, false).int_range(), (0, 7));
        assert_eq!(q(false, true).int_range(), (0, 6));
    }

    #[test]
    fn apply_clips_then_rounds_half_to_even() {
        let q = UniformQuant {
            scale: 0.5,
            zero_point: 0.0,
            bits: 2,
            signed: false,
            narrow: false,
            rounding: Rounding::HalfEven,
        };
        assert_eq!(q.apply(0.25), 0.0); // 0.5 -> 0 (even)
        assert_eq!(q.apply(0.75), 1.0); // 1.5 -> 2
        assert_eq!(q.apply(-3.0), 0.0);
        assert_eq!(q.apply(9.0), 1.5); // clipped at 3
        let floor = UniformQuant { rounding: Rounding::Floor, ..q };
        assert_eq!(floor.apply(0.99), 0.5);
    }
}
