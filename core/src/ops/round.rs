//! Device-generic building blocks for quantizers composed from tensor ops (the learnable
//! quantizers, which need gradients to their parameters and so do not use the fused
//! [`mixture`](super::mixture) op): round half to even, a straight-through round, and LSQ's
//! gradient scaling.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 of magnitude below `2^22` to the
/// nearest integer, ties to even, in the hardware's round-to-nearest-even arithmetic.
const MAGIC: f64 = 12_582_912.0;

/// The largest magnitude [`round_half_even`] handles exactly.
pub const ROUND_LIMIT: f32 = 4_194_304.0;

/// Rounds every element of an f32 tensor to the nearest integer, ties to even (as
/// `f32::round_ties_even`, `rintf` and the fused quantizer kernels do), on any device, through
/// `(x + 1.5·2^23) - 1.5·2^23`. Exact for `|x| < 2^22` (quantizers round values already clipped
/// to a few hundred levels). Not differentiable: use it on detached values or through
/// [`round_ste`].
pub fn round_half_even(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return Err(Error::msg(format!("round_half_even: expected an f32 tensor, got {:?}", x.dtype())));
    }
    Ok(x.detach().affine(1.0, MAGIC)?.affine(1.0, -MAGIC)?)
}

/// `round_half_even(x)` forward with the identity gradient (the straight-through estimator):
/// `x + (round(x) - x).detach()`.
pub fn round_ste(x: &Tensor) -> Result<Tensor> {
    let r = round_half_even(x)?;
    Ok(x.add(&r.sub(&x.detach())?.detach())?)
}

/// LSQ's gradient scale: exactly the value of `s` (`(s - s.detach())·g + s.detach()`: the
/// first term is an exact 0, so an exported graph can use the step as it is), the gradient
/// times `g`.
pub fn grad_scale(s: &Tensor, g: f64) -> Result<Tensor> {
    let d = s.detach();
    Ok(s.sub(&d)?.affine(g, 0.0)?.add(&d)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rounds_half_to_even_like_the_kernels() {
        let v = [-2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -3.7, 7.2, 255.5, 254.5, 1e6 + 0.5, -0.0];
        let x = Tensor::new(&v, &Device::Cpu).unwrap();
        let got = round_half_even(&x).unwrap().to_vec1::<f32>().unwrap();
        for (g, x) in got.iter().zip(v) {
            assert_eq!(*g, x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn ste_passes_the_gradient_and_grad_scale_scales_it() {
        let x = Var::new(&[0.4f32, 1.6], &Device::Cpu).unwrap();
        let y = round_ste(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 2.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);

        let s = Var::new(&[3.0f32], &Device::Cpu).unwrap();
        let t = grad_scale(s.as_tensor(), 0.25).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![3.0]);
        let g = t.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(s.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![0.25]);
    }
}
