//! Train-mode batch norm followed by a quantizer mixture, `x̂ = Σ_i p_i · Q_i(bn(x))`, as one
//! CPU op: the EdMIPS blocks' `bn → quantized conv`, where the batch norm's output has no other
//! consumer.
//!
//! Composed, the pair writes the normalised `y` and reads it back, and candle's backward gives
//! `y`'s gradient a zero-filled tensor of its own that the mixture's `dy` is added to. Fused:
//!
//! * **forward**: the batch statistics as [`batch_norm_train`](super::batch_norm) computes them
//!   (and its running-statistics update), then per plane `y = x·a + d` into a plane-sized
//!   buffer and the mixture of that buffer straight into the output. `y` is never stored.
//! * **backward**, given `g = dL/dx̂`: per mixture chunk ([`CHUNK`]
//!   elements of the flat tensor, the mixture op's own chunking) `y` is recomputed and the
//!   mixture's backward writes `dy` into the `dx` buffer and returns the chunk's `dp`; then batch
//!   norm's backward turns `dy` into `dx` in place and gives `dγ`, `dβ`.
//!
//! Every value is computed by the same kernels in the same order as the composition
//! (`plane_affine`, the mixture's block kernels, `backward_cpu`), so the results are those of
//! `mix(batch_norm_train(x))`: the output, `dx`, `dγ`, `dβ` and `dp` equal (up to the sign of a
//! zero: candle's backward adds each gradient to `+0`) and the running statistics bit for bit,
//! on every thread count. Other devices keep the composition (the op answers `None`).

use std::marker::PhantomData;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch_norm::{backward_cpu, cpu_train, inv_std, plane_affine, plane_bwd_sums, BatchNormParams, BwdGrad};
use super::cpu_path::CpuPath;
use super::cpu_slice;
use super::mixture::{backward_block, forward_block, packed_weights, ElementQuantizer, CHUNK, MAX_BRANCHES};
use crate::error::Result;

/// `Σ_i probs[i] · q(bn(x); params[i])` with train-mode batch norm `bn` (batch statistics,
/// running statistics updated in place), gradients to `x`, the batch norm's scale and shift and
/// `probs`. `Ok(None)` where there is no fused kernel (not the CPU): compose
/// [`batch_norm_train`](super::batch_norm::batch_norm_train) and
/// [`mixture`](super::mixture::mixture) then. `name` labels errors.
pub fn batch_norm_mixture<Q: ElementQuantizer>(
    x: &Tensor,
    bn: &BatchNormParams,
    name: &str,
    probs: &Tensor,
    params: &Tensor,
) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() {
        return Ok(None);
    }
    let (k, pp) = packed_weights::<Q>(probs, params)?;
    let t = cpu_train(x, bn, name)?;
    let wb = Tensor::cat(&[&t.weight, &t.bias], 0)?;
    let op = BnMixOp::<Q> { k, eps: bn.eps, dims: t.dims, coef: t.coef, mean_var: t.mean_var, _q: PhantomData };
    Ok(Some(t.x.apply_op3(&wb, &pp, op)?))
}

/// The forward op: `(x, wb = [γ (C), β (C)], pp) -> x̂`.
struct BnMixOp<Q> {
    k: usize,
    eps: f64,
    dims: (usize, usize, usize),
    coef: Vec<(f32, f32)>,
    mean_var: Tensor,
    _q: PhantomData<fn() -> Q>,
}

/// One mixture chunk's partial `dp` (per branch, f64).
type DpPartial = [f64; MAX_BRANCHES];
/// Batch norm's backward sums `(Σ dy, Σ dy·x̂)` of one plane, by plane index.
type PlaneSums = (usize, (f64, f64));

/// The backward op: `(x, g, aux = [mean (C), var (C), γ (C), pp]) -> [dx, dγ (C), dβ (C), dp (k)]`.
struct BnMixBwdOp<Q> {
    k: usize,
    eps: f64,
    dims: (usize, usize, usize),
    coef: Vec<(f32, f32)>,
    _q: PhantomData<fn() -> Q>,
}

impl<Q: ElementQuantizer> CustomOp3 for BnMixOp<Q> {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-mixture"
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
        let x = cpu_slice(s1, l1, "batch norm mixture x")?;
        let pp = cpu_slice(s3, l3, "batch norm mixture weights")?;
        if x.len() != n * c * hw || hw == 0 {
            candle_core::bail!("batch norm mixture: input of {} values, expected {n}×{c}×{hw}", x.len());
        }
        let (probs, params) = pp.split_at(self.k);
        let path = CpuPath::detect();
        // SAFETY: every plane of the output is written by the mixture's forward.
        let mut out = unsafe { super::output_buffer(x.len())? };
        out.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each_init(
            || vec![0f32; hw],
            |y, (p, (o, xi))| {
                let (a, d) = self.coef[p % c];
                plane_affine(path, y, xi, a, d);
                forward_block::<Q>(path, o, y, probs, params);
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        pp: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.elem_count(), self.dims.1);
        let aux = Tensor::cat(&[&self.mean_var, &wb.narrow(0, 0, c)?, pp], 0)?.contiguous()?;
        let op =
            BnMixBwdOp::<Q> { k: self.k, eps: self.eps, dims: self.dims, coef: self.coef.clone(), _q: PhantomData };
        let packed = x.apply_op3_no_bwd(&g.contiguous()?, &aux, &op)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dwb = packed.narrow(0, n, 2 * c)?;
        let dp = packed.narrow(0, n + 2 * c, self.k)?;
        let zeros = Tensor::zeros(pp.elem_count() - self.k, DType::F32, pp.device())?;
        Ok((Some(dx), Some(dwb), Some(Tensor::cat(&[&dp, &zeros], 0)?)))
    }
}

impl<Q: ElementQuantizer> CustomOp3 for BnMixBwdOp<Q> {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-mixture-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, hw) = self.dims;
        let x = cpu_slice(s1, l1, "batch norm mixture backward x")?;
        let g = cpu_slice(s2, l2, "batch norm mixture backward gradient")?;
        let aux = cpu_slice(s3, l3, "batch norm mixture backward aux")?;
        let total = n * c * hw;
        if x.len() != total || g.len() != total || aux.len() != 3 * c + self.k * (1 + Q::PARAMS) {
            candle_core::bail!("batch norm mixture backward: inputs of {}, {}, {} values", x.len(), g.len(), aux.len());
        }
        let (mean, var, w, pp) = (&aux[..c], &aux[c..2 * c], &aux[2 * c..3 * c], &aux[3 * c..]);
        let (probs, params) = pp.split_at(self.k);
        let path = CpuPath::detect();
        // SAFETY: the mixture's backward writes all of `dx` (chunk by chunk), batch norm's then
        // overwrites it in place; the tail is written below.
        let mut out = unsafe { super::output_buffer(total + 2 * c + self.k)? };
        let (dx, tail) = out.split_at_mut(total);
        // dy = mixture backward of y = x·a + d, recomputed per chunk, into `dx`; then, for each
        // plane wholly inside the chunk, batch norm's sums (Σ dy, Σ dy·x̂) while the chunk is
        // in cache (the same call on the same plane as `backward_cpu` makes for a plane not given).
        let (n, c, hw) = self.dims;
        let eps = self.eps;
        let chunks: Vec<(DpPartial, Vec<PlaneSums>)> = dx
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .enumerate()
            .map_init(
                || vec![0f32; CHUNK],
                |y, (ci, ((d, xs), gs))| {
                    let (e0, y) = (ci * CHUNK, &mut y[..xs.len()]);
                    let mut e = 0;
                    while e < xs.len() {
                        let plane = (e0 + e) / hw;
                        let end = ((plane + 1) * hw - e0).min(xs.len());
                        let (a, dd) = self.coef[plane % c];
                        plane_affine(path, &mut y[e..end], &xs[e..end], a, dd);
                        e = end;
                    }
                    let dp = backward_block::<Q>(path, d, y, gs, probs, params);
                    let whole = e0.div_ceil(hw)..(e0 + xs.len()) / hw;
                    let sums = whole
                        .map(|p| {
                            let (o, ch) = (p * hw - e0, p % c);
                            let (dy, xp) = (&d[o..o + hw], &xs[o..o + hw]);
                            (p, plane_bwd_sums(path, dy, xp, mean[ch] as f64, inv_std(var[ch], eps)))
                        })
                        .collect();
                    (dp, sums)
                },
            )
            .collect();
        let mut dp = vec![0f64; self.k];
        let mut plane_sums = vec![None; n * c];
        for (part, sums) in &chunks {
            for (b, d) in dp.iter_mut().enumerate() {
                *d += part[b];
            }
            for &(p, ab) in sums {
                plane_sums[p] = Some(ab);
            }
        }
        // dx from dy, in place; (Σ dy, Σ dy·x̂) per channel are dβ and dγ.
        let sums = backward_cpu(eps, self.dims, x, BwdGrad::InPlace, mean, var, w, dx, Some(&plane_sums));
        for (ci, &(sg, sgx)) in sums.iter().enumerate() {
            tail[ci] = sgx as f32;
            tail[c + ci] = sg as f32;
        }
        for (t, &d) in tail[2 * c..].iter_mut().zip(&dp) {
            *t = d as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(total + 2 * c + self.k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use crate::ops::batch_norm::batch_norm_train;
    use crate::ops::mixture::mixture;
    use candle_core::{Device, Var};

    /// An HWGQ-like family: `round(clamp(x, 0, θ₁)/θ₀)·θ₀`, gradient `1[0 ≤ x ≤ θ₁]`.
    struct Clip;
    impl ElementQuantizer for Clip {
        const NAME: &'static str = "test_clip";
        const PARAMS: usize = 2;
        const CUDA_SOURCE: &'static str = "";
        fn q(x: f32, p: &[f32]) -> f32 {
            let c = if x < 0.0 {
                0.0
            } else if x > p[1] {
                p[1]
            } else {
                x
            };
            (c / p[0]).round_ties_even() * p[0]
        }
        fn ste(x: f32, p: &[f32]) -> f32 {
            if (0.0..=p[1]).contains(&x) {
                1.0
            } else {
                0.0
            }
        }
    }

    struct Case {
        x: Var,
        w: Var,
        b: Var,
        rm: Var,
        rv: Var,
        probs: Var,
    }

    fn case(d: [usize; 4]) -> Case {
        let dev = Device::Cpu;
        let c = d[1];
        let x = Var::from_vec(det_fill(d.iter().product(), 1, 2.0), d.as_slice(), &dev).unwrap();
        let w = Var::from_vec(det_fill(c, 2, 1.0).iter().map(|v| 1.0 + v).collect(), c, &dev).unwrap();
        let b = Var::from_vec(det_fill(c, 3, 0.5), c, &dev).unwrap();
        let rm = Var::from_vec(det_fill(c, 4, 0.1), c, &dev).unwrap();
        let rv = Var::from_vec(vec![1.0f32; c], c, &dev).unwrap();
        let probs = Var::from_vec(vec![0.2f32, 0.5, 0.3], 3, &dev).unwrap();
        Case { x, w, b, rm, rv, probs }
    }

    /// `(output, dx, dγ, dβ, dp, running mean, running var)` of `Σ out·g` through the fused op
    /// (`fused`) or the composition, on a fresh copy of `c`.
    #[allow(clippy::type_complexity)]
    fn run(c: &Case, affine: bool, fused: bool) -> Vec<Vec<f32>> {
        let dev = Device::Cpu;
        let (rm, rv) = (
            Var::from_tensor(&c.rm.as_tensor().copy().unwrap()).unwrap(),
            Var::from_tensor(&c.rv.as_tensor().copy().unwrap()).unwrap(),
        );
        let p = BatchNormParams {
            weight: affine.then(|| c.w.as_tensor()),
            bias: affine.then(|| c.b.as_tensor()),
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-5,
            momentum: 0.1,
        };
        let params = Tensor::new(&[[0.538f32, 1.614], [0.3217, 2.2519], [0.185, 2.775]], &dev).unwrap();
        let out = if fused {
            batch_norm_mixture::<Clip>(c.x.as_tensor(), &p, "bn", c.probs.as_tensor(), &params).unwrap().unwrap()
        } else {
            mixture::<Clip>(&batch_norm_train(c.x.as_tensor(), &p, "bn").unwrap(), c.probs.as_tensor(), &params)
                .unwrap()
        };
        let g = Tensor::from_vec(det_fill(out.elem_count(), 9, 1.0), out.shape(), &dev).unwrap();
        let grads = out.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grad = |v: &Var| grads.get(v.as_tensor()).map(flat).unwrap_or_default();
        vec![flat(&out), grad(&c.x), grad(&c.w), grad(&c.b), grad(&c.probs), flat(rm.as_tensor()), flat(rv.as_tensor())]
    }

    const WHAT: [&str; 7] = ["output", "dx", "dgamma", "dbeta", "dp", "running mean", "running var"];

    /// The fused op gives the composition's output, gradients (x, γ, β, probs) and running
    /// statistics, with and without affine, for planes inside one mixture chunk and planes
    /// straddling chunks (`==`, which equates the two zeros; the statistics bit for bit).
    #[test]
    fn fused_equals_batch_norm_then_mixture() {
        for d in [[3, 5, 11, 11], [2, 3, 70, 70]] {
            let c = case(d);
            for affine in [true, false] {
                let (f, u) = (run(&c, affine, true), run(&c, affine, false));
                for (i, what) in WHAT.iter().enumerate() {
                    if !affine && (i == 2 || i == 3) {
                        assert!(f[i].is_empty() && u[i].is_empty(), "{what}: no gradient without affine");
                        continue;
                    }
                    assert!(!f[i].is_empty(), "{what} {d:?}");
                    assert_eq!(f[i], u[i], "{what}, {d:?}, affine {affine}");
                    if i >= 5 {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&f[i]), bits(&u[i]), "{what} bits");
                    }
                }
                // Not vacuous: some outputs are clipped to 0, some positive, and dx is not zero.
                assert!(f[0].contains(&0.0) && f[0].iter().any(|&v| v > 0.5));
                assert!(f[1].iter().any(|&v| v != 0.0));
            }
        }
    }

    /// The fused op's results do not depend on the number of threads (bitwise).
    #[test]
    fn fused_does_not_depend_on_thread_count() {
        let c = case([2, 3, 70, 70]);
        let runs: Vec<Vec<Vec<u32>>> = [1, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| run(&c, true, true))
                    .into_iter()
                    .map(|v| v.iter().map(|x| x.to_bits()).collect())
                    .collect()
            })
            .collect();
        for (i, what) in WHAT.iter().enumerate() {
            assert_eq!(runs[0][i], runs[1][i], "{what}");
        }
    }
}
