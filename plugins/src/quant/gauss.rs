//! The Gaussian weight quantizer of EdMIPS (decisions.md R1): a mid-rise uniform quantizer whose step
//! is the optimal one for a Gaussian, scaled by the weight tensor's standard deviation.
//!
//! With `σ` the unbiased std of the whole tensor (detached; D5), `step = g_b · σ`
//! (table [`GAUSS_STEPS`], computed in f64 then rounded to f32), `L = 2^(b-1)` and
//! `thr = (L - 0.5) · step`:
//! `y = clamp((round_half_even(W/step + 0.5) - 0.5) · step, -thr, thr)`. The levels are
//! `±(k + 0.5)·step`; there is no zero level and ties go to even, so `W = 0` maps to
//! `-step/2` (D4). The straight-through gradient is the identity everywhere, with no clip mask
//! (D6). Bits outside 1..=4 are a configuration error.

use edmips_core::candle::{DType, Tensor};
use edmips_core::ops::consts::cached;
use edmips_core::ops::mixture::{mixture, ElementQuantizer};
use edmips_core::ops::stats::unbiased_std;
use edmips_core::{Error, Operand, Params, QuantExport, Quantizer, Result, Rounding, Table, UniformQuant};

use super::{one, unsupported};

/// The registry id.
pub const ID: &str = "gauss";

/// `(bits, step in units of σ)`: the optimal uniform quantizer steps for a unit Gaussian.
pub const GAUSS_STEPS: [(u32, f64); 4] = [(1, 1.596), (2, 0.996), (3, 0.586), (4, 0.336)];

/// The Gaussian weight quantizer (no parameters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauss;

/// Per-element Gaussian quantizer for the fused mixture op. Branch parameters: `[step, thr]`.
pub struct GaussElement;

impl ElementQuantizer for GaussElement {
    const NAME: &'static str = "gauss";
    const PARAMS: usize = 2;
    const CUDA_SOURCE: &'static str = include_str!("gauss.cu");

    #[inline(always)]
    fn q(x: f32, prm: &[f32]) -> f32 {
        let y = ((x / prm[0] + 0.5).round_ties_even() - 0.5) * prm[0];
        if y < -prm[1] {
            -prm[1]
        } else if y > prm[1] {
            prm[1]
        } else {
            y
        }
    }

    #[inline(always)]
    fn ste(_x: f32, _prm: &[f32]) -> f32 {
        1.0
    }
}

edmips_core::register_kernel_source!(GaussElement);

impl Gauss {
    /// The step in units of σ for `bits` (1..=4).
    pub fn sigma_step(bits: u32) -> Option<f64> {
        GAUSS_STEPS.iter().find(|(b, _)| *b == bits).map(|(_, s)| *s)
    }

    /// `(L - 0.5)` for `bits`: the clip threshold in steps.
    fn half_levels(bits: u32) -> f64 {
        (1u64 << (bits - 1)) as f64 - 0.5
    }

    /// Branch parameters `[k, 2]` (`step`, `thr`) for `σ` (a 1-element tensor), on σ's device:
    /// `step = f32(g_b · f64(σ))`, `thr = f32((L - 0.5) · step_f64)`.
    ///
    /// σ stays on the device (no host read, [`unbiased_std`]); the per-bit factors `g_b` and
    /// `L - 0.5` are constants built once per device and bit list ([`cached`]), so a forward
    /// makes no host-to-device copy.
    pub fn branch_params(sigma: &Tensor, bits: &[u32]) -> Result<Tensor> {
        let dev = sigma.device();
        for &b in bits {
            Gauss.check(Operand::Weight, b)?;
        }
        let g = cached(dev, "gauss.sigma_steps", bits, |d| {
            let g: Vec<f64> = bits.iter().map(|&b| Self::sigma_step(b).unwrap_or_default()).collect();
            Ok(Tensor::from_vec(g, bits.len(), d)?)
        })?;
        let h = cached(dev, "gauss.half_levels", bits, |d| {
            let h: Vec<f64> = bits.iter().map(|&b| Self::half_levels(b)).collect();
            Ok(Tensor::from_vec(h, bits.len(), d)?)
        })?;
        let sig = sigma.to_dtype(DType::F64)?.reshape(1)?;
        let steps = g.broadcast_mul(&sig)?;
        let thr = steps.mul(&h)?;
        Ok(Tensor::stack(&[&steps, &thr], 1)?.to_dtype(DType::F32)?)
    }

    /// Quantizes with a given step (in weight units, not σ units): the reference's
    /// rescaled-step variant. Gradient: identity.
    pub fn quantize_with_step(x: &Tensor, bits: u32, step: f64) -> Result<Tensor> {
        Gauss.check(Operand::Weight, bits)?;
        let prm = [step as f32, (Self::half_levels(bits) * step) as f32];
        let params = Tensor::from_vec(prm.to_vec(), (1, 2), x.device())?;
        mixture::<GaussElement>(x, &one(x.device())?, &params)
    }
}

impl Quantizer for Gauss {
    fn id(&self) -> &str {
        ID
    }

    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        if operand == Operand::Weight && Self::sigma_step(bits).is_some() {
            Ok(())
        } else {
            Err(unsupported(
                ID,
                operand,
                bits,
                "weights with 1, 2, 3 or 4 bits (the Gaussian step table covers 1-4 bits only)",
            ))
        }
    }

    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, _learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        mixture::<GaussElement>(x, &one(x.device())?, &Self::branch_params(&unbiased_std(x)?, &[bits])?)
    }

    /// Shared-weight mixture: σ is computed once and every branch's step scales it.
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
        mixture::<GaussElement>(x, probs, &Self::branch_params(&unbiased_std(x)?, bits)?)
    }

    fn has_fused_mix(&self) -> bool {
        true
    }

    /// The mid-rise grid `±(k + 0.5)·step` as an unsigned uniform quantizer: scale `step` (the
    /// f32 step [`quantize`](Quantizer::quantize) uses, from `W`'s std), zero point
    /// `2^(b−1) − 0.5`, `2^b` integers: `s·(q − z)` for `q = 0..2^b − 1` is exactly
    /// `±(k + 0.5)·s`, and rounding `W/s + z` puts the thresholds at the multiples of `s`, as
    /// the quantizer does. Only exact ties (`W/s` an integer) differ: `z − 0.5` is odd for
    /// `b ≥ 2`, so half-to-even picks the other neighbour (`W = 0` goes to `+s/2` rather than
    /// `−s/2`, D4). Export therefore stores `Q(W)`, on which this description is the identity.
    fn export_form(
        &self,
        operand: Operand,
        bits: u32,
        x: Option<&Tensor>,
        _learned: &[Tensor],
    ) -> Result<Option<QuantExport>> {
        self.check(operand, bits)?;
        let w = x.ok_or_else(|| Error::msg("gauss: the export form of a weight quantizer needs the weight tensor"))?;
        let prm = Self::branch_params(&unbiased_std(w)?, &[bits])?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Some(QuantExport::Uniform(UniformQuant {
            scale: prm[0],
            zero_point: Self::half_levels(bits) as f32,
            bits,
            signed: false,
            narrow: false,
            rounding: Rounding::HalfEven,
        })))
    }
}

fn build(params: &Table) -> Result<Box<dyn Quantizer>> {
    Params::new(ID, params).deny_unknown(&[])?;
    Ok(Box::new(Gauss))
}

edmips_core::register_quantizer! {
    id: ID,
    summary: "Gaussian weight quantizer (1-4 bits, step = optimal Gaussian step x std(W)); identity STE",
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::Device;

    #[test]
    fn zero_maps_to_minus_half_step_and_ties_go_to_even() {
        let s = 0.25f32;
        let p = [s, 1.5 * s]; // 2 bits
        assert_eq!(GaussElement::q(0.0, &p), -0.125);
        assert_eq!(GaussElement::q(0.25, &p), 0.375);
        assert_eq!(GaussElement::q(0.5, &p), 0.375);
        assert_eq!(GaussElement::q(-0.25, &p), -0.125);
        assert_eq!(GaussElement::q(10.0, &p), 0.375);
    }

    #[test]
    fn the_export_grid_holds_every_quantized_weight() {
        // Heavy tails, so that even the outermost 4-bit levels (±2.52σ) are used.
        let v: Vec<f32> =
            edmips_core::init::det_fill(4096, 7, 1.0).iter().map(|u| 0.1 * u / (1.05 - u.abs())).collect();
        let w = Tensor::from_vec(v, 4096, &Device::Cpu).unwrap();
        for bits in 1..=4u32 {
            let q = Gauss.quantize(&w, Operand::Weight, bits, &[]).unwrap().to_vec1::<f32>().unwrap();
            let Some(QuantExport::Uniform(u)) = Gauss.export_form(Operand::Weight, bits, Some(&w), &[]).unwrap() else {
                panic!("gauss {bits} bits: not uniform");
            };
            let sigma = unbiased_std(&w).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
            assert_eq!(u.scale, (Gauss::sigma_step(bits).unwrap() * sigma) as f32);
            assert_eq!(u.zero_point, (1u32 << (bits - 1)) as f32 - 0.5);
            let (lo, hi) = u.int_range();
            let mut seen = std::collections::BTreeSet::new();
            for &v in &q {
                let t = v / u.scale + u.zero_point;
                let k = t.round_ties_even();
                assert!((t - k).abs() < 1e-4 && k >= lo as f32 && k <= hi as f32, "bits {bits}: {v} -> {t}");
                seen.insert(k as i64);
                // The node is the identity on Q(W), up to one ulp where the quantizer clamps at
                // f32((L - 0.5)·step) rather than (L - 0.5)·f32(step).
                let back = u.apply(v);
                assert!((back - v).abs() <= v.abs() * 2e-7, "bits {bits}: {v} -> {back}");
            }
            assert_eq!(seen.len(), 1usize << bits, "bits {bits}: every level is used");
        }
        // Exact ties are where the raw W would differ: 0 is -s/2 for the quantizer, +s/2 here.
        let Some(QuantExport::Uniform(u)) = Gauss.export_form(Operand::Weight, 2, Some(&w), &[]).unwrap() else {
            panic!("not uniform");
        };
        let p = [u.scale, 1.5 * u.scale];
        assert_eq!((GaussElement::q(0.0, &p), u.apply(0.0)), (-0.5 * u.scale, 0.5 * u.scale));
        assert!(Gauss.export_form(Operand::Weight, 2, None, &[]).is_err());
    }

    #[test]
    fn bits_outside_one_to_four_are_a_configuration_error() {
        for b in [0, 5, 8, 32] {
            let e = Gauss.check(Operand::Weight, b).unwrap_err().to_string();
            assert!(e.contains("gauss") && e.contains("1-4 bits"), "{e}");
        }
        let x = Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap();
        assert!(Gauss.quantize(&x, Operand::Weight, 32, &[]).is_err());
        assert!(Gauss.quantize(&x, Operand::Activation, 2, &[]).is_err());
    }
}
