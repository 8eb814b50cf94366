//! HWGQ: the half-wave Gaussian activation quantizer (Cai et al., "Deep Learning with Low
//! Precision by Half-wave Gaussian Quantization", CVPR 2017), as EdMIPS uses it (decisions.md R1).
//!
//! For `bits` in 1..=4 with step `s` (table [`HWGQ_STEPS`]) and `thr = s·(2^bits - 1)`:
//! `y = round_half_even(clamp(x, 0, thr) / s) · s`, in f32 with `s` and `thr` rounded to f32
//! first and a true division. The straight-through gradient is `g · 1[0 <= x <= thr]`, the
//! **closed** interval (D1). For `bits = 32` (full precision) it is `max(x, 0)` with gradient
//! `1[x >= 0]` (passing at 0). HWGQ is the networks' nonlinearity: no ReLU precedes it.

use edmips_core::candle::{Device, Tensor};
use edmips_core::ops::batch_norm::BatchNormParams;
use edmips_core::ops::bn_mixture::batch_norm_mixture;
use edmips_core::ops::consts::cached;
use edmips_core::ops::mixture::{mixture, ElementQuantizer};
use edmips_core::{Operand, Params, Precision, QuantExport, Quantizer, Result, Rounding, Table, UniformQuant};

use super::{one, unsupported};

/// The registry id.
pub const ID: &str = "hwgq";

/// `(bits, step)`: the optimal uniform step for a half-wave Gaussian at each bit width.
pub const HWGQ_STEPS: [(u32, f64); 4] = [(1, 0.799), (2, 0.538), (3, 0.3217), (4, 0.185)];

/// The HWGQ activation quantizer (no parameters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hwgq;

/// Per-element HWGQ for the fused mixture op. Branch parameters: `[step, thr, full_precision]`.
pub struct HwgqElement;

impl ElementQuantizer for HwgqElement {
    const NAME: &'static str = "hwgq";
    const PARAMS: usize = 3;
    const CUDA_SOURCE: &'static str = include_str!("hwgq.cu");

    // Both functions are written without early returns or short-circuits (selects only), so
    // the kernels' loops over elements vectorise; the values are those of the plain
    // `if x < 0 {0} else if x > thr {thr} else {x}` form, NaN and -0.0 included.
    #[inline(always)]
    fn q(x: f32, prm: &[f32]) -> f32 {
        let relu = if x < 0.0 { 0.0 } else { x };
        let c = if relu > prm[1] { prm[1] } else { relu };
        let quantized = (c / prm[0]).round_ties_even() * prm[0];
        if prm[2] != 0.0 {
            relu
        } else {
            quantized
        }
    }

    #[inline(always)]
    fn ste(x: f32, prm: &[f32]) -> f32 {
        let inside = (x >= 0.0) & ((prm[2] != 0.0) | (x <= prm[1]));
        if inside {
            1.0
        } else {
            0.0
        }
    }
}

edmips_core::register_kernel_source!(HwgqElement);

impl Hwgq {
    /// The step for `bits` (1..=4).
    pub fn step(bits: u32) -> Option<f64> {
        HWGQ_STEPS.iter().find(|(b, _)| *b == bits).map(|(_, s)| *s)
    }

    /// Branch parameters `[step, thr, full_precision]` for `bits` (f32, as the kernel uses them).
    pub fn branch_params(bits: u32) -> Option<[f32; 3]> {
        if Precision::is_full(bits) {
            return Some([0.0, 0.0, 1.0]);
        }
        let s = Self::step(bits)?;
        let levels = ((1u64 << bits) - 1) as f64;
        Some([s as f32, (s * levels) as f32, 0.0])
    }

    /// The `[k, 3]` branch parameters of `bits` on `device`. They depend only on the bits, so
    /// they are built once per device and bit list ([`cached`]): no host-to-device copy per
    /// layer per step.
    fn params(&self, bits: &[u32], device: &Device) -> Result<Tensor> {
        for &b in bits {
            self.check(Operand::Activation, b)?;
        }
        cached(device, "hwgq.branch_params", bits, |d| {
            let v: Vec<f32> = bits.iter().flat_map(|&b| Self::branch_params(b).unwrap_or_default()).collect();
            Ok(Tensor::from_vec(v, (bits.len(), 3), d)?)
        })
    }
}

impl Quantizer for Hwgq {
    fn id(&self) -> &str {
        ID
    }

    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        let ok = operand == Operand::Activation && (Precision::is_full(bits) || Self::step(bits).is_some());
        if ok {
            Ok(())
        } else {
            Err(unsupported(ID, operand, bits, "activations with 1, 2, 3 or 4 bits, or 32 (full precision: ReLU)"))
        }
    }

    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, _learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        mixture::<HwgqElement>(x, &one(x.device())?, &self.params(&[bits], x.device())?)
    }

    fn mix(
        &self,
        x: &Tensor,
        operand: Operand,
        bits: &[u32],
        probs: &Tensor,
        _learned: &[Vec<Tensor>],
    ) -> Result<Tensor> {
        for &b in bits {
            self.check(operand, b)?;
        }
        mixture::<HwgqElement>(x, probs, &self.params(bits, x.device())?)
    }

    fn has_fused_mix(&self) -> bool {
        true
    }

    /// The batch norm in front and the mixture as one CPU op (`batch_norm_mixture`).
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
        batch_norm_mixture::<HwgqElement>(x, bn, bn_name, probs, &self.params(bits, x.device())?)
    }

    /// `bits < 32`: the unsigned uniform quantizer with scale `f32(s)`, zero point 0 and
    /// `2^bits` levels, rounding half to even. Clipping `x/s` to `[0, 2^bits − 1]` before
    /// rounding gives HWGQ's `round(clamp(x, 0, thr)/s)` for every `x` (`thr/s` rounds to
    /// `2^bits − 1`). `bits = 32`: ReLU.
    fn export_form(
        &self,
        operand: Operand,
        bits: u32,
        _x: Option<&Tensor>,
        _learned: &[Tensor],
    ) -> Result<Option<QuantExport>> {
        self.check(operand, bits)?;
        if Precision::is_full(bits) {
            return Ok(Some(QuantExport::Relu));
        }
        let prm = Self::branch_params(bits).ok_or_else(|| unsupported(ID, operand, bits, "1-4 or 32 bits"))?;
        Ok(Some(QuantExport::Uniform(UniformQuant {
            scale: prm[0],
            zero_point: 0.0,
            bits,
            signed: false,
            narrow: false,
            rounding: Rounding::HalfEven,
        })))
    }
}

fn build(params: &Table) -> Result<Box<dyn Quantizer>> {
    Params::new(ID, params).deny_unknown(&[])?;
    Ok(Box::new(Hwgq))
}

edmips_core::register_quantizer! {
    id: ID,
    summary: "HWGQ activation quantizer (1-4 bits, 32 = ReLU); STE masked by the closed clip interval",
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_the_spec() {
        let thr: Vec<f32> = (1..=4).map(|b| Hwgq::branch_params(b).unwrap()[1]).collect();
        assert_eq!(thr, vec![0.799f64 as f32, 1.614f64 as f32, 2.2519f64 as f32, 2.775f64 as f32]);
    }

    #[test]
    fn ties_round_to_even_and_gradient_passes_at_the_bounds() {
        let p = Hwgq::branch_params(2).unwrap();
        assert_eq!(HwgqElement::q(0.269, &p), 0.0); // 0.5 step -> 0
        assert_eq!(HwgqElement::q(0.807, &p), 1.076); // 1.5 steps -> 2 steps
        assert_eq!(HwgqElement::ste(0.0, &p), 1.0);
        assert_eq!(HwgqElement::ste(-0.0, &p), 1.0);
        assert_eq!(HwgqElement::ste(p[1], &p), 1.0);
        assert_eq!(HwgqElement::ste(f32::from_bits(p[1].to_bits() + 1), &p), 0.0);
        let fp = Hwgq::branch_params(32).unwrap();
        assert_eq!(
            (HwgqElement::q(-1.0, &fp), HwgqElement::ste(0.0, &fp), HwgqElement::ste(-1e-9, &fp)),
            (0.0, 1.0, 0.0)
        );
    }

    #[test]
    fn the_export_form_reproduces_every_output_bit_for_bit() {
        for bits in 1..=4u32 {
            let p = Hwgq::branch_params(bits).unwrap();
            let Some(QuantExport::Uniform(u)) = Hwgq.export_form(Operand::Activation, bits, None, &[]).unwrap() else {
                panic!("hwgq {bits} bits: not uniform");
            };
            assert_eq!((u.scale, u.int_range()), (p[0], (0, (1 << bits) - 1)));
            // Ties (k + 0.5 steps), the threshold and its neighbours, negatives, a sweep.
            let mut xs: Vec<f32> = (0..40).map(|k| (k as f32 * 0.5) * p[0]).collect();
            xs.extend([p[1], f32::from_bits(p[1].to_bits() - 1), f32::from_bits(p[1].to_bits() + 1), -1.0, -0.0]);
            xs.extend((0..20_000).map(|i| -1.0 + i as f32 * 2.5e-4));
            for x in xs {
                assert_eq!(u.apply(x), HwgqElement::q(x, &p), "bits {bits}, x {x:e}");
            }
        }
        assert_eq!(Hwgq.export_form(Operand::Activation, 32, None, &[]).unwrap(), Some(QuantExport::Relu));
        assert!(Hwgq.export_form(Operand::Weight, 2, None, &[]).is_err());
    }

    #[test]
    fn rejects_weights_and_unknown_bits() {
        assert!(Hwgq.check(Operand::Weight, 2).is_err());
        let e = Hwgq.check(Operand::Activation, 5).unwrap_err().to_string();
        assert!(e.contains("hwgq") && e.contains("5") && e.contains("1, 2, 3 or 4"), "{e}");
    }
}
