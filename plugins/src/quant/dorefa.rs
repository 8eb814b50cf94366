//! The DoReFa weight quantizer (Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional
//! Neural Networks with Low Bitwidth Gradients", arXiv:1606.06160, 2016).
//!
//! `x = tanh(W) / (2 · max|tanh(W)|) + 1/2` maps the weights into `[0, 1]`; then
//! `W_q = 2 · quantize_k(x) - 1` with `quantize_k(x) = round((2^k - 1) · x) / (2^k - 1)` (round
//! half to even, like the other quantizers), so the levels are `2j/(2^k - 1) - 1`,
//! `j = 0..2^k - 1`, symmetric in `[-1, 1]`. The gradient is the paper's straight-through rule:
//! `round` passes the gradient unchanged, so `dW_q/dW` is the derivative of `tanh(W)/max|tanh W|`
//! (the max included, as in the paper's implementation). For `k = 1` the same formula gives
//! `±1`, without the paper's separate `E|W|` scaling of binary weights.
//!
//! The normalisation is composed from candle ops (autograd for free); the quantize-and-mix step
//! is the fused mixture op (CPU kernel, CUDA source `dorefa.cu`), shared by every candidate
//! bit width of a search.

use edmips_core::candle::{DType, Tensor};
use edmips_core::ops::mixture::{mixture, ElementQuantizer};
use edmips_core::{Operand, Params, Quantizer, Result, Table};

use super::unsupported;

/// The registry id.
pub const ID: &str = "dorefa";

/// The DoReFa weight quantizer (no parameters), for 1 to 8 bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dorefa;

/// Per-element `2 · round(L·x)/L - 1` on the normalised weight; branch parameter `[L]`.
pub struct DorefaElement;

impl ElementQuantizer for DorefaElement {
    const NAME: &'static str = "dorefa";
    const PARAMS: usize = 1;
    const CUDA_SOURCE: &'static str = include_str!("dorefa.cu");

    #[inline(always)]
    fn q(x: f32, prm: &[f32]) -> f32 {
        2.0 * (x * prm[0]).round_ties_even() / prm[0] - 1.0
    }

    #[inline(always)]
    fn ste(_x: f32, _prm: &[f32]) -> f32 {
        2.0
    }
}

edmips_core::register_kernel_source!(DorefaElement);

impl Dorefa {
    /// `tanh(W) / (2 · max|tanh(W)|) + 1/2`, differentiable.
    pub fn normalise(w: &Tensor) -> Result<Tensor> {
        let t = w.to_dtype(DType::F32)?.tanh()?;
        let m = t.abs()?.flatten_all()?.max_keepdim(0)?;
        Ok((t.broadcast_div(&(m * 2.0)?)? + 0.5)?)
    }

    fn params(&self, bits: &[u32], x: &Tensor) -> Result<Tensor> {
        let mut v = Vec::with_capacity(bits.len());
        for &b in bits {
            self.check(Operand::Weight, b)?;
            v.push(((1u64 << b) - 1) as f32);
        }
        Ok(Tensor::from_vec(v, (bits.len(), 1), x.device())?)
    }
}

impl Quantizer for Dorefa {
    fn id(&self) -> &str {
        ID
    }

    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        if operand == Operand::Weight && (1..=8).contains(&bits) {
            Ok(())
        } else {
            Err(unsupported(ID, operand, bits, "weights with 1 to 8 bits"))
        }
    }

    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, _learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        let one = Tensor::ones(1, DType::F32, x.device())?;
        mixture::<DorefaElement>(&Self::normalise(x)?, &one, &self.params(&[bits], x)?)
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
        mixture::<DorefaElement>(&Self::normalise(x)?, probs, &self.params(bits, x)?)
    }

    fn has_fused_mix(&self) -> bool {
        true
    }
}

fn build(params: &Table) -> Result<Box<dyn Quantizer>> {
    Params::new(ID, params).deny_unknown(&[])?;
    Ok(Box::new(Dorefa))
}

edmips_core::register_quantizer! {
    id: ID,
    summary: "DoReFa weights (Zhou et al. 2016): tanh normalisation, k-bit uniform in [-1, 1], 1-8 bits",
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};

    /// The f64 forward: `2·round(L·x)/L - 1` with `x = tanh(w)/(2 max|tanh w|) + 1/2`.
    fn reference(w: &[f64], bits: u32) -> Vec<f64> {
        let l = ((1u64 << bits) - 1) as f64;
        let m = w.iter().map(|v| v.tanh().abs()).fold(0.0, f64::max);
        w.iter().map(|v| 2.0 * ((v.tanh() / (2.0 * m) + 0.5) * l).round_ties_even() / l - 1.0).collect()
    }

    #[test]
    fn forward_matches_a_float64_reference_and_levels_are_symmetric() {
        let wv: Vec<f32> = (0..40).map(|i| ((i as f32) * 0.37).sin() * 0.8).collect();
        let w = Tensor::new(wv.as_slice(), &Device::Cpu).unwrap();
        for bits in [1, 2, 3, 4, 8] {
            let y = Dorefa.quantize(&w, Operand::Weight, bits, &[]).unwrap().to_vec1::<f32>().unwrap();
            let want = reference(&wv.iter().map(|&v| v as f64).collect::<Vec<_>>(), bits);
            for (a, b) in y.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-6, "{bits} bits: {a} vs {b}");
            }
            let mut levels: Vec<i64> = y.iter().map(|v| (v * 1e4).round() as i64).collect();
            levels.sort();
            levels.dedup();
            assert!(levels.len() <= 1 << bits, "{bits} bits: {} levels", levels.len());
            assert!(y.iter().all(|v| (-1.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn gradient_is_the_straight_through_derivative_of_the_normalisation() {
        // With round passing the gradient, W_q = tanh(W)/max|tanh W| as a smooth function.
        let wv: Vec<f32> = vec![0.3, -0.7, 0.05, 0.9, -0.2];
        let w = Var::new(wv.as_slice(), &Device::Cpu).unwrap();
        let g = [0.5f32, -1.0, 2.0, 0.25, 1.5];
        let y = Dorefa.quantize(w.as_tensor(), Operand::Weight, 3, &[]).unwrap();
        let loss = y.mul(&Tensor::new(&g, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        let grad = loss.backward().unwrap().get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let smooth = |x: &[f64]| -> f64 {
            let m = x.iter().map(|v| v.tanh().abs()).fold(0.0, f64::max);
            x.iter().zip(&g).map(|(v, gi)| v.tanh() / m * *gi as f64).sum()
        };
        let x: Vec<f64> = wv.iter().map(|&v| v as f64).collect();
        for i in 0..x.len() {
            let h = 1e-6;
            let (mut p, mut q) = (x.clone(), x.clone());
            p[i] += h;
            q[i] -= h;
            let fd = (smooth(&p) - smooth(&q)) / (2.0 * h);
            assert!((grad[i] as f64 - fd).abs() < 1e-4, "dW[{i}]: {} vs fd {fd}", grad[i]);
        }
    }

    #[test]
    fn only_weights_of_one_to_eight_bits() {
        assert!(Dorefa.check(Operand::Activation, 2).is_err());
        for b in [0, 9, 32] {
            let e = Dorefa.check(Operand::Weight, b).unwrap_err().to_string();
            assert!(e.contains("dorefa") && e.contains("1 to 8"), "{e}");
        }
    }
}
