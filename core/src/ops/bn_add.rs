//! Train-mode batch norm followed by an addition, `batch_norm_train(x) + r`, as one CPU op: the
//! EdMIPS blocks' `bn2` (or `bn3`) and the residual addition after it.
//!
//! Composed, the pair writes the normalised `y` and reads it back for the addition, and candle's
//! backward gives `y`'s gradient a zero-filled tensor of its own that the addition's gradient is
//! added to. Fused, the forward writes `(x·a + d) + r` per plane (the batch statistics, their
//! coefficients and the running-statistics update as [`batch_norm_train`](super::batch_norm)
//! has them), and the backward runs batch norm's backward on the upstream gradient `g` directly
//! and hands `g` itself to `r`. The values are those of the composition: the output and the
//! running statistics bit for bit, the gradients equal up to the sign of a zero (candle's
//! backward adds each gradient to `+0`). Other devices keep the composition (`None`).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch_norm::{cpu_train, train_backward, BatchNormParams};
use super::cpu_path::{multiversion, CpuPath};
use super::cpu_slice;
use crate::error::{Error, Result};

/// `batch_norm_train(x) + r` (`r` of `x`'s shape), gradients to `x`, the batch norm's scale and
/// shift and `r`; the running statistics updated in place. `Ok(None)` where there is no fused
/// kernel (not the CPU). `name` labels errors.
pub fn batch_norm_add(x: &Tensor, bn: &BatchNormParams, name: &str, r: &Tensor) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() {
        return Ok(None);
    }
    if r.dims() != x.dims() {
        return Err(Error::Shape {
            context: format!("batch norm {name} + residual"),
            expected: format!("a residual of the batch norm's shape {:?}", x.dims()),
            found: format!("{:?}", r.dims()),
        });
    }
    let t = cpu_train(x, bn, name)?;
    let r = r.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let wb = Tensor::cat(&[&t.weight, &t.bias], 0)?;
    let op = BnAddOp { eps: bn.eps, dims: t.dims, coef: t.coef, mean_var: t.mean_var };
    Ok(Some(t.x.apply_op3(&wb, &r, op)?))
}

/// `(x, wb = [γ (C), β (C)], r) -> bn(x) + r`.
struct BnAddOp {
    eps: f64,
    dims: (usize, usize, usize),
    coef: Vec<(f32, f32)>,
    mean_var: Tensor,
}

multiversion! {
    /// `o_e = (x_e·a + d) + r_e`: batch norm's affine, rounded, then the addition.
    fn plane_affine_add(o: &mut [f32], xs: &[f32], rs: &[f32], a: f32, d: f32) {
        for ((o, &v), &rv) in o.iter_mut().zip(xs).zip(rs) {
            let y = v * a + d;
            *o = y + rv;
        }
    }
}

impl CustomOp3 for BnAddOp {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, hw) = self.dims;
        let x = cpu_slice(s1, l1, "batch norm add x")?;
        let r = cpu_slice(s3, l3, "batch norm add residual")?;
        if x.len() != n * c * hw || r.len() != x.len() || hw == 0 {
            candle_core::bail!("batch norm add: inputs of {} and {} values, expected {n}×{c}×{hw}", x.len(), r.len());
        }
        let path = CpuPath::detect();
        // SAFETY: every plane is written.
        let mut out = unsafe { super::output_buffer(x.len())? };
        out.par_chunks_mut(hw).zip(x.par_chunks(hw)).zip(r.par_chunks(hw)).enumerate().for_each(
            |(p, ((o, xi), ri))| {
                let (a, d) = self.coef[p % c];
                plane_affine_add(path, o, xi, ri, a, d);
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.dims.1;
        let g = g.contiguous()?;
        let (dx, dw, db) = train_backward(self.eps, x, &wb.narrow(0, 0, c)?, &g, &self.mean_var)?;
        let dwb = match (dw, db) {
            (Some(dw), Some(db)) => Some(Tensor::cat(&[&dw, &db], 0)?),
            _ => None,
        };
        Ok((dx, dwb, Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use crate::ops::batch_norm::batch_norm_train;
    use candle_core::{Device, Var};

    /// `(output, dx, dγ, dβ, dr, running mean, running var)` of `Σ out·g`, fused or composed.
    fn run(d: [usize; 4], affine: bool, fused: bool) -> Vec<Vec<f32>> {
        let dev = Device::Cpu;
        let c = d[1];
        let n: usize = d.iter().product();
        let x = Var::from_vec(det_fill(n, 1, 2.0), d.as_slice(), &dev).unwrap();
        let r = Var::from_vec(det_fill(n, 2, 1.0), d.as_slice(), &dev).unwrap();
        let w = Var::from_vec(det_fill(c, 3, 1.0).iter().map(|v| 1.0 + v).collect(), c, &dev).unwrap();
        let b = Var::from_vec(det_fill(c, 4, 0.5), c, &dev).unwrap();
        let rm = Var::from_vec(det_fill(c, 5, 0.1), c, &dev).unwrap();
        let rv = Var::from_vec(vec![1.0f32; c], c, &dev).unwrap();
        let p = BatchNormParams {
            weight: affine.then(|| w.as_tensor()),
            bias: affine.then(|| b.as_tensor()),
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-5,
            momentum: 0.1,
        };
        let out = if fused {
            batch_norm_add(x.as_tensor(), &p, "bn", r.as_tensor()).unwrap().unwrap()
        } else {
            batch_norm_train(x.as_tensor(), &p, "bn").unwrap().add(r.as_tensor()).unwrap()
        };
        let g = Tensor::from_vec(det_fill(n, 9, 1.0), out.shape(), &dev).unwrap();
        let grads = out.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grad = |v: &Var| grads.get(v.as_tensor()).map(flat).unwrap_or_default();
        vec![flat(&out), grad(&x), grad(&w), grad(&b), grad(&r), flat(rm.as_tensor()), flat(rv.as_tensor())]
    }

    /// The fused op gives the composition's output and running statistics bit for bit and its
    /// gradients (`==`), with and without affine; and does not depend on the thread count.
    #[test]
    fn fused_equals_batch_norm_then_add() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for d in [[3, 5, 11, 11], [2, 3, 70, 70]] {
            for affine in [true, false] {
                let (f, u) = (run(d, affine, true), run(d, affine, false));
                for (i, what) in
                    ["output", "dx", "dgamma", "dbeta", "dr", "running mean", "running var"].iter().enumerate()
                {
                    assert_eq!(f[i], u[i], "{what}, {d:?}, affine {affine}");
                    assert_eq!(f[i].is_empty(), !affine && (i == 2 || i == 3), "{what}");
                    if i == 0 || i >= 5 {
                        assert_eq!(bits(&f[i]), bits(&u[i]), "{what} bits");
                    }
                }
                assert!(f[1].iter().any(|&v| v != 0.0));
            }
        }
        let runs: Vec<Vec<Vec<u32>>> = [1, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| run([2, 3, 70, 70], true, true)).iter().map(|v| bits(v)).collect()
            })
            .collect();
        assert_eq!(runs[0], runs[1]);
    }

    #[test]
    fn a_residual_of_another_shape_is_an_error() {
        let dev = Device::Cpu;
        let (rm, rv) = (
            Var::zeros(2, candle_core::DType::F32, &dev).unwrap(),
            Var::ones(2, candle_core::DType::F32, &dev).unwrap(),
        );
        let p =
            BatchNormParams { weight: None, bias: None, running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let x = Tensor::zeros((2, 2, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let r = Tensor::zeros((2, 2, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let e = batch_norm_add(&x, &p, "layer1.0.bn2", &r).unwrap_err().to_string();
        assert!(e.contains("layer1.0.bn2") && e.contains("[2, 2, 3, 3]"), "{e}");
    }
}
