//! Small statistics used by quantizers.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The unbiased (divisor `n-1`) standard deviation of all elements of `x`, detached from the
/// graph, as a 1-element f32 tensor on `x`'s device.
///
/// It is computed in f64 and rounded once to f32, which reproduces PyTorch's f32 `std()` (decisions.md
/// R1, D5). No host synchronisation: the value stays on the device.
pub fn unbiased_std(x: &Tensor) -> Result<Tensor> {
    let n = x.elem_count();
    if n < 2 {
        return Err(Error::msg(format!("the standard deviation needs at least 2 elements, got {n}")));
    }
    let x = x.detach().to_dtype(DType::F64)?.flatten_all()?;
    let mean = x.mean_all()?;
    let var = (x.broadcast_sub(&mean)?.sqr()?.sum_all()? / (n - 1) as f64)?;
    Ok(var.sqrt()?.to_dtype(DType::F32)?.reshape(1)?)
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
        assert!(unbiased_std(&Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
