//! Small statistics used by quantizers.

use candle_core::{DType, Tensor};

use super::cpu_slice;
use super::lanes::sum_by_lanes;
use crate::error::{Error, Result};

/// The unbiased (divisor `n-1`) standard deviation of all elements of `x`, detached from the
/// graph, as a 1-element f32 tensor on `x`'s device.
///
/// It is computed in f64 and rounded once to f32, which reproduces PyTorch's f32 `std()` (decisions.md
/// R1, D5). No host synchronisation: the value stays on the device. A contiguous f32 tensor on
/// the CPU takes two passes over its slice ([`host_unbiased_std`]) instead of five tensor ops
/// and two f64 copies (2.5% of a ResNet-18 retrain step, whose weight quantizer calls this for
/// every layer).
pub fn unbiased_std(x: &Tensor) -> Result<Tensor> {
    let n = x.elem_count();
    if n < 2 {
        return Err(Error::msg(format!("the standard deviation needs at least 2 elements, got {n}")));
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        let s = {
            let (st, l) = x.storage_and_layout();
            let candle_core::Storage::Cpu(cs) = &*st else {
                return Err(Error::msg("unbiased_std: a CPU tensor without CPU storage"));
            };
            host_unbiased_std(cpu_slice(cs, l, "unbiased_std")?)
        };
        return Ok(Tensor::from_vec(vec![s], 1, x.device())?);
    }
    let x = x.detach().to_dtype(DType::F64)?.flatten_all()?;
    let mean = x.mean_all()?;
    let var = (x.broadcast_sub(&mean)?.sqr()?.sum_all()? / (n - 1) as f64)?;
    Ok(var.sqrt()?.to_dtype(DType::F32)?.reshape(1)?)
}

/// The unbiased standard deviation of a slice (at least 2 elements): the f64 mean, then the
/// f64 sum of squared deviations, each summed in [`super::lanes`] order, rounded once to f32.
pub fn host_unbiased_std(x: &[f32]) -> f32 {
    let n = x.len() as f64;
    let mean = sum_by_lanes(x, |v| v as f64) / n;
    let ss = sum_by_lanes(x, |v| {
        let d = v as f64 - mean;
        d * d
    });
    (ss / (n - 1.0)).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_float64_reference() {
        let v: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let t = Tensor::from_vec(v.clone(), (10, 100), &Device::Cpu).unwrap();
        let s = unbiased_std(&t).unwrap().to_vec1::<f32>().unwrap()[0];
        let m: f64 = v.iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
        let var: f64 = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / 999.0;
        assert_eq!(s, var.sqrt() as f32);
        // The host path against the tensor-op path it replaces (a non-contiguous view takes the
        // latter), on a weight-sized tensor.
        let big = crate::init::det_fill(3 * 64 * 64 * 9, 5, 0.2);
        let t = Tensor::from_vec(big, (64 * 3, 64 * 9), &Device::Cpu).unwrap();
        let fast = unbiased_std(&t).unwrap().to_vec1::<f32>().unwrap()[0];
        let slow = unbiased_std(&t.t().unwrap()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(!t.t().unwrap().is_contiguous());
        assert!((fast - slow).abs() <= f32::EPSILON * slow, "{fast} vs {slow}");
        assert!(unbiased_std(&Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
