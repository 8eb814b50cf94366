//! Batch normalisation over the channels of an `[N, C, H, W]` tensor, PyTorch semantics
//! (decisions.md R9): a fused custom op on the CPU in train mode, candle tensor ops elsewhere.
//!
//! * **Train**: normalise with the batch mean and the **biased** batch variance; then update
//!   the running statistics in place, outside the autograd graph:
//!   `running = (1 - momentum)·running + momentum·batch`, using the **unbiased** batch variance
//!   (`var · n / (n - 1)`, `n = N·H·W`) for `running_var`.
//! * **Eval**: normalise with the running statistics.
//!
//! The optional affine scale and shift are applied after normalising.
//!
//! On the CPU and on CUDA, train mode is one fused custom op (statistics accumulated in f64 per
//! channel; its backward is a second fused op), because the composed reductions over
//! `(N, H, W)` are slow (CPU) or many kernel launches and temporaries (CUDA). The CPU kernels
//! are multi-threaded over channels and planes; the CUDA kernels (`batch_norm.cu`, compiled by
//! NVRTC) use the same f64 formulas in the same order, with a fixed reduction order, so they
//! are deterministic. On other devices, and on CUDA with `EDMIPS_CUDA_BN=composed` (an escape
//! hatch, read once), it is composed from candle's tensor ops. All give the same values to f32
//! rounding and are tested against an f64 reference (CUDA against the CPU in
//! `tests/cuda_kernels.rs`).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, Var};
use rayon::prelude::*;

use super::cpu_path::{multiversion, multiversion_wide, CpuPath};
use super::cpu_slice;
use super::lanes::{reduce, reduce2};

use crate::error::{Error, Result};

/// The per-channel tensors of one batch-norm layer.
#[derive(Debug, Clone)]
pub struct BatchNormParams<'a> {
    /// Scale `γ` (`[C]`), if affine.
    pub weight: Option<&'a Tensor>,
    /// Shift `β` (`[C]`), if affine.
    pub bias: Option<&'a Tensor>,
    /// Running mean (`[C]`), updated in place in train mode.
    pub running_mean: &'a Var,
    /// Running variance (`[C]`), updated in place in train mode.
    pub running_var: &'a Var,
    /// Added to the variance.
    pub eps: f64,
    /// Running-statistics momentum.
    pub momentum: f64,
}

fn check(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<usize> {
    let (_, c, _, _) = x.dims4().map_err(|_| Error::Shape {
        context: format!("batch norm {name}"),
        expected: "a rank-4 [N, C, H, W] input".into(),
        found: format!("{:?}", x.dims()),
    })?;
    if p.running_mean.dims() != [c] {
        return Err(Error::Shape {
            context: format!("batch norm {name}"),
            expected: format!("[N, {}, H, W]", p.running_mean.dim(0).unwrap_or(0)),
            found: format!("{:?}", x.dims()),
        });
    }
    Ok(c)
}

fn affine(y: Tensor, p: &BatchNormParams, c: usize) -> Result<Tensor> {
    let y = match p.weight {
        Some(w) => y.broadcast_mul(&w.reshape((1, c, 1, 1))?)?,
        None => y,
    };
    Ok(match p.bias {
        Some(b) => y.broadcast_add(&b.reshape((1, c, 1, 1))?)?,
        None => y,
    })
}

/// Train-mode batch norm: batch statistics, and an in-place running-statistics update.
/// `name` labels errors. On the CPU and on CUDA the normalisation is the fused op.
pub fn batch_norm_train(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<Tensor> {
    train(x, p, name, fused_on(x.device()))
}

/// Whether train mode takes the fused op on `dev`: the CPU always; CUDA unless
/// `EDMIPS_CUDA_BN=composed`.
pub fn fused_on(dev: &candle_core::Device) -> bool {
    dev.is_cpu() || (dev.is_cuda() && cuda_fused())
}

fn cuda_fused() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FUSED.get_or_init(|| std::env::var("EDMIPS_CUDA_BN").map(|v| v.trim() != "composed").unwrap_or(true))
}

/// [`batch_norm_train`] through the composed candle ops on every device: the path the fused
/// CPU op replaces, kept for tests and benches that compare the two.
pub fn batch_norm_train_composed(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<Tensor> {
    train(x, p, name, false)
}

/// Checks a train-mode input: `(channels, values per channel)`, the latter at least 2.
fn check_train(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<(usize, usize)> {
    let c = check(x, p, name)?;
    let (n, _, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        return Err(Error::msg(format!(
            "batch norm {name}: train mode needs more than one value per channel, got input {:?}",
            x.dims()
        )));
    }
    Ok((c, count))
}

fn train(x: &Tensor, p: &BatchNormParams, name: &str, fused: bool) -> Result<Tensor> {
    let (c, count) = check_train(x, p, name)?;
    let x = x.to_dtype(DType::F32)?;
    let (y, mean, var) = if fused { fused_train(&x, p, c)? } else { composed_train(&x, p, c)? };
    update_running(p, &mean, &var, count)?;
    Ok(y)
}

/// The running statistics' update from the batch `mean` and biased `var` over `count` values
/// per channel: detached, in place.
fn update_running(p: &BatchNormParams, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
    let m = p.momentum;
    let bmean = mean.detach().flatten_all()?;
    let bvar = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
    let rm = ((p.running_mean.as_tensor().detach() * (1.0 - m))? + (bmean * m)?)?;
    let rv = ((p.running_var.as_tensor().detach() * (1.0 - m))? + (bvar * m)?)?;
    p.running_mean.set(&rm)?;
    p.running_var.set(&rv)?;
    Ok(())
}

/// What an op that fuses train-mode batch norm with the op after it needs on the CPU
/// ([`super::bn_mixture`]): the statistics and coefficients the fused batch norm uses, after
/// the same checks and the same running-statistics update.
pub(crate) struct CpuTrain {
    /// The input as a contiguous f32 tensor.
    pub x: Tensor,
    /// `(N, C, H·W)`.
    pub dims: (usize, usize, usize),
    /// The scale `γ` (ones without affine) and shift `β` (zeros), f32, contiguous.
    pub weight: Tensor,
    /// See `weight`.
    pub bias: Tensor,
    /// Per-channel `(a, d)` with `y = x·a + d`, as the fused forward computes them.
    pub coef: Vec<(f32, f32)>,
    /// `[mean (C), biased var (C)]` rounded to f32: what the backward reads.
    pub mean_var: Tensor,
}

/// Train-mode batch norm's preparation on the CPU for a fused op: the checks, the batch
/// statistics (as [`batch_norm_train`] computes them, bit for bit) and the running-statistics
/// update. The caller applies `y = x·a + d` itself.
pub(crate) fn cpu_train(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<CpuTrain> {
    let (c, count) = check_train(x, p, name)?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let dev = x.device().clone();
    let weight = match p.weight {
        Some(w) => w.to_dtype(DType::F32)?.contiguous()?,
        None => Tensor::ones(c, DType::F32, &dev)?,
    };
    let bias = match p.bias {
        Some(b) => b.to_dtype(DType::F32)?.contiguous()?,
        None => Tensor::zeros(c, DType::F32, &dev)?,
    };
    let (n, _, h, wd) = x.dims4()?;
    let stats = {
        let (st, l) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cs) = &*st else {
            return Err(Error::msg(format!("batch norm {name}: the fused CPU path got a tensor on another device")));
        };
        channel_stats(cpu_slice(cs, l, "batch norm")?, n, c, h * wd)
    };
    let coef = affine_coefficients(&weight.to_vec1::<f32>()?, &bias.to_vec1::<f32>()?, &stats, p.eps);
    let mean_var: Vec<f32> = stats.iter().map(|s| s.0 as f32).chain(stats.iter().map(|s| s.1 as f32)).collect();
    let mean_var = Tensor::from_vec(mean_var, 2 * c, &dev)?;
    update_running(p, &mean_var.narrow(0, 0, c)?, &mean_var.narrow(0, c, c)?, count)?;
    Ok(CpuTrain { x, dims: (n, c, h * wd), weight, bias, coef, mean_var })
}

/// Composed train-mode normalisation: `(y, batch mean, biased batch variance)`.
fn composed_train(x: &Tensor, p: &BatchNormParams, c: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let inv = (&var + p.eps)?.sqrt()?.recip()?;
    Ok((affine(xc.broadcast_mul(&inv)?, p, c)?, mean, var))
}

/// Fused (CPU or CUDA) train-mode normalisation: `(y, batch mean, biased batch variance)`.
fn fused_train(x: &Tensor, p: &BatchNormParams, c: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = x.device();
    let w = match p.weight {
        Some(w) => w.to_dtype(DType::F32)?,
        None => Tensor::ones(c, DType::F32, dev)?,
    };
    let b = match p.bias {
        Some(b) => b.to_dtype(DType::F32)?,
        None => Tensor::zeros(c, DType::F32, dev)?,
    };
    let x = x.contiguous()?;
    let (w, b) = (w.contiguous()?, b.contiguous()?);
    if dev.is_cpu() {
        return fused_train_cpu(&x, &w, &b, p.eps, c);
    }
    let n = x.elem_count();
    let packed = x.apply_op3(&w, &b, BnTrain { eps: p.eps })?;
    let y = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    Ok((y, packed.narrow(0, n, c)?.detach(), packed.narrow(0, n + c, c)?.detach()))
}

/// The CPU train-mode forward: the statistics are computed on the host first and handed to
/// the op, whose only output is `y` itself. (A packed `[y, mean, var]` output, as CUDA has,
/// puts a `narrow` and a `reshape` into the autograd graph, and candle's backward of each
/// allocates, zero-fills and adds a gradient the size of the activation: three extra passes
/// per batch norm.) Values are the same as the packed op's, bit for bit.
fn fused_train_cpu(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, c: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, _, h, wd) = x.dims4()?;
    let stats = {
        let (st, l) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cs) = &*st else {
            return Err(Error::msg("batch norm: the CPU path got a tensor on another device"));
        };
        channel_stats(cpu_slice(cs, l, "batch norm")?, n, c, h * wd)
    };
    let mean_var: Vec<f32> = stats.iter().map(|s| s.0 as f32).chain(stats.iter().map(|s| s.1 as f32)).collect();
    let mean_var = Tensor::from_vec(mean_var, 2 * c, x.device())?;
    let (mean, var) = (mean_var.narrow(0, 0, c)?, mean_var.narrow(0, c, c)?);
    let y = x.apply_op3(w, b, BnTrainCpu { eps, stats, mean_var })?;
    Ok((y, mean, var))
}

/// Per-channel f64 statistics of an `[N, C, HW]` slice: `(mean, biased variance)`, each plane
/// summed in [`super::lanes`] order and the planes in sample order.
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    let path = CpuPath::detect();
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let m = (n * hw) as f64;
            let mut s = 0f64;
            for ni in 0..n {
                s += plane_sum(path, &x[(ni * c + ci) * hw..][..hw]);
            }
            let mean = s / m;
            let mut q = 0f64;
            for ni in 0..n {
                q += plane_sq_dev(path, &x[(ni * c + ci) * hw..][..hw], mean);
            }
            (mean, q / m)
        })
        .collect()
}

// The per-plane loops of the CPU kernels, each compiled portable and for AVX2
// ([`super::cpu_path`]); the f64 loops are where the wider vectors pay most.

multiversion_wide! {
    /// `Σ_e x_e` in f64 lanes.
    fn plane_sum<W>(xs: &[f32]) -> f64 {
        reduce::<W>(xs, |v| v)
    }
}

multiversion_wide! {
    /// `Σ_e (x_e − mean)²` in f64 lanes.
    fn plane_sq_dev<W>(xs: &[f32], mean: f64) -> f64 {
        let mean = W::splat(mean);
        reduce::<W>(xs, |v| {
            let d = v.sub(mean);
            d.mul(d)
        })
    }
}

multiversion! {
    /// `y_e = x_e·a + d` (f32, no fused multiply-add).
    pub(crate) fn plane_affine(y: &mut [f32], xs: &[f32], a: f32, d: f32) {
        for (o, &v) in y.iter_mut().zip(xs) {
            *o = v * a + d;
        }
    }
}

multiversion_wide! {
    /// `(Σ_e g_e, Σ_e g_e·x̂_e)` with `x̂ = (x − mu)·inv`, in f64 lanes.
    pub(crate) fn plane_bwd_sums<W>(g: &[f32], xs: &[f32], mu: f64, inv: f64) -> (f64, f64) {
        let (mu, inv) = (W::splat(mu), W::splat(inv));
        reduce2::<W>(g, xs, |gv, _| gv, |gv, xv| gv.mul(xv.sub(mu)).mul(inv))
    }
}

/// One element of batch norm's input gradient: `k·(m·g − sg − x̂·sgx)` with
/// `x̂ = (x − mu)·inv`, in f64, rounded once.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_dx(xv: f32, gv: f32, mu: f64, inv: f64, k: f64, m: f64, sg: f64, sgx: f64) -> f32 {
    let xh = (xv as f64 - mu) * inv;
    (k * (m * gv as f64 - sg - xh * sgx)) as f32
}

multiversion! {
    /// [`bwd_dx`] over a plane.
    fn plane_bwd_dx(d: &mut [f32], xs: &[f32], g: &[f32], mu: f64, inv: f64, k: f64, m: f64, sg: f64, sgx: f64) {
        for ((o, &xv), &gv) in d.iter_mut().zip(xs).zip(g) {
            *o = bwd_dx(xv, gv, mu, inv, k, m, sg, sgx);
        }
    }
}

multiversion! {
    /// [`bwd_dx`] over a plane whose gradient is `d` itself (overwritten with `dx`).
    fn plane_bwd_dx_in_place(d: &mut [f32], xs: &[f32], mu: f64, inv: f64, k: f64, m: f64, sg: f64, sgx: f64) {
        for (o, &xv) in d.iter_mut().zip(xs) {
            *o = bwd_dx(xv, *o, mu, inv, k, m, sg, sgx);
        }
    }
}

fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    match l.dims() {
        [n, c, h, w] => Ok((*n, *c, h * w)),
        d => candle_core::bail!("batch norm: expected a rank-4 input, got {d:?}"),
    }
}

/// Fused train-mode forward: `(x, weight, bias) -> [y (n), mean (C), biased var (C)]`.
struct BnTrain {
    eps: f64,
}

/// The gradients `(dx, dweight, dbias)` of train-mode batch norm from the upstream gradient `g`
/// (contiguous, `x`'s shape) and the f32 batch statistics `mean_var = [mean (C), var (C)]`:
/// the backward of both train ops.
pub(crate) fn train_backward(
    eps: f64,
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    mean_var: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (n, c) = (x.elem_count(), w.elem_count());
    let aux = Tensor::cat(&[mean_var, w], 0)?.contiguous()?;
    let packed = x.apply_op3_no_bwd(g, &aux, &BnTrainBwd { eps })?;
    let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    Ok((Some(dx), Some(packed.narrow(0, n, c)?), Some(packed.narrow(0, n + c, c)?)))
}

/// The CPU inputs of a train-mode forward op: `(n, c, hw)` and the `x`, weight and bias slices,
/// with the weight and bias checked to have one value per channel.
#[allow(clippy::type_complexity)]
fn train_inputs<'a>(
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> candle_core::Result<((usize, usize, usize), &'a [f32], &'a [f32], &'a [f32])> {
    let (n, c, hw) = dims(l1)?;
    let x = cpu_slice(s1, l1, "batch norm")?;
    let w = cpu_slice(s2, l2, "batch norm weight")?;
    let b = cpu_slice(s3, l3, "batch norm bias")?;
    if w.len() != c || b.len() != c {
        candle_core::bail!("batch norm: {c} channels, but {} scales and {} shifts", w.len(), b.len());
    }
    Ok(((n, c, hw), x, w, b))
}

/// The CPU train-mode forward `(x, weight, bias) -> y`, given the batch statistics (f64, as
/// [`channel_stats`] returns them) and the same rounded to f32 (`[mean (C), var (C)]`, what the
/// backward reads).
struct BnTrainCpu {
    eps: f64,
    stats: Vec<(f64, f64)>,
    mean_var: Tensor,
}

/// `y = x·a + d` per channel with `a = w/√(var+ε)` and `d = b − mean·a` (f64, rounded once);
/// `C = w.len()` channels of `hw` values.
fn normalize_cpu(x: &[f32], w: &[f32], b: &[f32], stats: &[(f64, f64)], eps: f64, hw: usize, y: &mut [f32]) {
    let c = w.len();
    let coef = affine_coefficients(w, b, stats, eps);
    let path = CpuPath::detect();
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(p, (yo, xi))| {
        let (a, d) = coef[p % c];
        plane_affine(path, yo, xi, a, d);
    });
}

/// Per-channel `(a, d) = (w/√(var+ε), b − mean·a)`, computed in f64 and rounded once each.
pub(crate) fn affine_coefficients(w: &[f32], b: &[f32], stats: &[(f64, f64)], eps: f64) -> Vec<(f32, f32)> {
    stats
        .iter()
        .enumerate()
        .map(|(ci, &(mean, var))| {
            let scale = w[ci] as f64 / (var + eps).sqrt();
            (scale as f32, (b[ci] as f64 - mean * scale) as f32)
        })
        .collect()
}

impl CustomOp3 for BnTrainCpu {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-train-cpu"
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
        let ((_, c, hw), x, w, b) = train_inputs((s1, l1), (s2, l2), (s3, l3))?;
        if self.stats.len() != c {
            candle_core::bail!("batch norm: {c} channels, but {} statistics", self.stats.len());
        }
        // SAFETY: `normalize_cpu` writes every plane in full.
        let mut y = unsafe { super::output_buffer(x.len())? };
        normalize_cpu(x, w, b, &self.stats, self.eps, hw, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        train_backward(self.eps, x, w, &grad_y.contiguous()?, &self.mean_var)
    }
}

/// Fused train-mode backward: `(x, g, aux = [mean, var, weight]) -> [dx (n), dweight (C), dbias (C)]`.
struct BnTrainBwd {
    eps: f64,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-train"
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
        let ((n, c, hw), x, w, b) = train_inputs((s1, l1), (s2, l2), (s3, l3))?;
        let stats = channel_stats(x, n, c, hw);
        let total = n * c * hw;
        // SAFETY: `normalize_cpu` writes all of `y`, the loop below the `2c` statistics.
        let mut out = unsafe { super::output_buffer(total + 2 * c)? };
        let (y, tail) = out.split_at_mut(total);
        normalize_cpu(x, w, b, &stats, self.eps, hw, y);
        for (ci, &(mean, var)) in stats.iter().enumerate() {
            tail[ci] = mean as f32;
            tail[c + ci] = var as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(total + 2 * c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self.eps, dims(l1)?, (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.elem_count(), w.elem_count());
        let g = grad_res.narrow(0, 0, n)?.reshape(x.shape())?.contiguous()?;
        train_backward(self.eps, x, w, &g, &res.narrow(0, n, 2 * c)?)
    }
}

impl CustomOp3 for BnTrainBwd {
    fn name(&self) -> &'static str {
        "edmips-batch-norm-train-bwd"
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
        let (n, c, hw) = dims(l1)?;
        let x = cpu_slice(s1, l1, "batch norm backward")?;
        let g = cpu_slice(s2, l2, "batch norm backward")?;
        let aux = cpu_slice(s3, l3, "batch norm backward")?;
        let (mean, var, w) = (&aux[..c], &aux[c..2 * c], &aux[2 * c..3 * c]);
        let total = n * c * hw;
        // SAFETY: `backward_cpu` writes every plane of `dx`, and the loop the `2c` sums.
        let mut out = unsafe { super::output_buffer(total + 2 * c)? };
        let (dx, tail) = out.split_at_mut(total);
        let sums = backward_cpu(self.eps, (n, c, hw), x, BwdGrad::From(g), mean, var, w, dx, None);
        for (ci, &(sg, sgx)) in sums.iter().enumerate() {
            tail[ci] = sgx as f32;
            tail[c + ci] = sg as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(total + 2 * c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::backward(self.eps, dims(l1)?, (s1, l1), (s2, l2), (s3, l3))
    }
}

/// Where [`backward_cpu`] reads the upstream gradient.
pub(crate) enum BwdGrad<'a> {
    /// A slice of its own.
    From(&'a [f32]),
    /// The `dx` buffer itself, overwritten plane by plane with the input gradient.
    InPlace,
}

/// `1/sqrt(var + eps)` of one channel, in f64: the factor [`plane_bwd_sums`] takes.
pub(crate) fn inv_std(var: f32, eps: f64) -> f64 {
    1.0 / (var as f64 + eps).sqrt()
}

/// Train-mode batch norm's backward on the CPU: per channel `(Σ g, Σ g·x̂)` in f64 (planes in
/// sample order, each in lanes), then `dx = (w·inv/m)·(m·g − Σg − x̂·Σg·x̂)` per element, for
/// `x` (`N × C × HW`) with the f32 batch `mean` and `var`. Returns the per-channel sums (the
/// gradients of `β` and `γ`).
///
/// `plane_sums`, where given, holds the per-plane sums of [`plane_bwd_sums`] (plane `ni·C + ci`,
/// over the gradient and `x`, with `mean[ci]` and [`inv_std`]) already computed for the planes
/// where it is `Some`: an op that produced the gradient plane by plane computes them while the
/// plane is in cache (`bn_mixture.rs`). The rest are computed here; the per-channel totals add
/// the planes in sample order either way, so the results do not depend on which were given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    eps: f64,
    (n, c, hw): (usize, usize, usize),
    x: &[f32],
    g: BwdGrad,
    mean: &[f32],
    var: &[f32],
    w: &[f32],
    dx: &mut [f32],
    plane_sums: Option<&[Option<(f64, f64)>]>,
) -> Vec<(f64, f64)> {
    let m = (n * hw) as f64;
    let path = CpuPath::detect();
    let sums_of = |g: &[f32]| -> Vec<(f64, f64, f64)> {
        (0..c)
            .into_par_iter()
            .map(|ci| {
                let inv = inv_std(var[ci], eps);
                let mu = mean[ci] as f64;
                let (mut sg, mut sgx) = (0f64, 0f64);
                for ni in 0..n {
                    let o = (ni * c + ci) * hw;
                    let (a, b) = match plane_sums.and_then(|p| p[ni * c + ci]) {
                        Some(ab) => ab,
                        None => plane_bwd_sums(path, &g[o..o + hw], &x[o..o + hw], mu, inv),
                    };
                    sg += a;
                    sgx += b;
                }
                (sg, sgx, inv)
            })
            .collect()
    };
    let coef = |sums: &[(f64, f64, f64)], p: usize| {
        let ci = p % c;
        let (sg, sgx, inv) = sums[ci];
        (mean[ci] as f64, inv, w[ci] as f64 * inv / m, sg, sgx)
    };
    let sums = match g {
        BwdGrad::From(g) => {
            let sums = sums_of(g);
            dx.par_chunks_mut(hw).zip(x.par_chunks(hw)).zip(g.par_chunks(hw)).enumerate().for_each(
                |(p, ((d, xi), gi))| {
                    let (mu, inv, k, sg, sgx) = coef(&sums, p);
                    plane_bwd_dx(path, d, xi, gi, mu, inv, k, m, sg, sgx);
                },
            );
            sums
        }
        BwdGrad::InPlace => {
            let sums = sums_of(dx);
            dx.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(p, (d, xi))| {
                let (mu, inv, k, sg, sgx) = coef(&sums, p);
                plane_bwd_dx_in_place(path, d, xi, mu, inv, k, m, sg, sgx);
            });
            sums
        }
    };
    sums.into_iter().map(|(sg, sgx, _)| (sg, sgx)).collect()
}

/// CUDA source of the fused batch-norm kernels (statistics per channel in f64, fixed
/// reduction order).
pub const BATCH_NORM_CUDA_SOURCE: &str = include_str!("batch_norm.cu");

fn cuda_source() -> String {
    format!("// edmips batch norm\n#define EDMIPS_BLOCK {}\n{BATCH_NORM_CUDA_SOURCE}", crate::ops::kernels::CUDA_BLOCK)
}

crate::register_kernel_source!(name: "edmips_batch_norm", source: cuda_source);

/// Chunks per channel of the CUDA statistics kernels for `count = N·H·W` values: enough blocks
/// to fill a GPU, at least 16 values per thread, at most 64 chunks. It depends on the shape
/// only, so the reduction order (and so the result) is the same on every GPU.
pub fn cuda_split(count: usize) -> usize {
    count.div_ceil(crate::ops::kernels::CUDA_BLOCK as usize * 16).clamp(1, 64)
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Launches of the batch-norm kernels.
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Shape};

    use super::cuda_split;
    use crate::ops::cuda::{grid, ptx_for, slice_f32};
    use crate::ops::kernels::CUDA_BLOCK;

    const MODULE: &str = "edmips_batch_norm";

    /// Kernel argument block; must match `struct BnArgs` in `batch_norm.cu`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct BnArgs {
        n: i64,
        c: i64,
        hw: i64,
        split: i64,
        chunk: i64,
        eps: f64,
    }
    unsafe impl DeviceRepr for BnArgs {}

    fn args((n, c, hw): (usize, usize, usize), eps: f64) -> BnArgs {
        let count = n * hw;
        let split = cuda_split(count);
        BnArgs {
            n: n as i64,
            c: c as i64,
            hw: hw as i64,
            split: split as i64,
            chunk: count.div_ceil(split) as i64,
            eps,
        }
    }

    fn configs(a: &BnArgs, total: usize) -> (LaunchConfig, LaunchConfig, LaunchConfig) {
        let block = (CUDA_BLOCK, 1, 1);
        let stats = LaunchConfig { grid_dim: (a.split as u32, a.c as u32, 1), block_dim: block, shared_mem_bytes: 0 };
        let channels =
            LaunchConfig { grid_dim: ((a.c as u32).div_ceil(CUDA_BLOCK), 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let elements = LaunchConfig { grid_dim: (grid(total), 1, 1), block_dim: block, shared_mem_bytes: 0 };
        (stats, channels, elements)
    }

    type In<'a> = (&'a CudaStorage, &'a Layout);

    /// `(x, weight, bias) -> [y (n), mean (C), biased var (C)]`.
    pub(super) fn forward(
        eps: f64,
        d: (usize, usize, usize),
        x: In,
        w: In,
        b: In,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &x.0.device;
        let (xv, wv, bv) = (
            slice_f32(x.0, x.1, "batch norm x")?,
            slice_f32(w.0, w.1, "batch norm weight")?,
            slice_f32(b.0, b.1, "batch norm bias")?,
        );
        let a = args(d, eps);
        let (c, total) = (d.1, d.0 * d.1 * d.2);
        let out = dev.alloc_zeros::<f32>(total + 2 * c)?;
        let partial = dev.alloc_zeros::<f64>(c * a.split as usize)?;
        let st = dev.alloc_zeros::<f64>(c)?;
        let coef = dev.alloc_zeros::<f32>(2 * c)?;
        let ptx = ptx_for(MODULE, super::cuda_source)?;
        let (stats, channels, elements) = configs(&a, total);
        for mode in [0i32, 1] {
            let f = dev.get_or_load_custom_func("bn_partial_stats", MODULE, &ptx)?;
            let mut l = f.builder();
            l.arg(&xv);
            l.arg(&st);
            l.arg(&partial);
            l.arg(&a);
            l.arg(&mode);
            unsafe { l.launch(stats) }.w()?;
            let f = dev.get_or_load_custom_func("bn_finalize", MODULE, &ptx)?;
            let mut l = f.builder();
            l.arg(&partial);
            l.arg(&st);
            l.arg(&wv);
            l.arg(&bv);
            l.arg(&out);
            l.arg(&coef);
            l.arg(&a);
            l.arg(&mode);
            unsafe { l.launch(channels) }.w()?;
        }
        let f = dev.get_or_load_custom_func("bn_apply", MODULE, &ptx)?;
        let mut l = f.builder();
        l.arg(&xv);
        l.arg(&coef);
        l.arg(&out);
        l.arg(&a);
        unsafe { l.launch(elements) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(total + 2 * c)))
    }

    /// `(x, g, aux = [mean, var, weight]) -> [dx (n), dweight (C), dbias (C)]`.
    pub(super) fn backward(
        eps: f64,
        d: (usize, usize, usize),
        x: In,
        g: In,
        aux: In,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &x.0.device;
        let (xv, gv, av) = (
            slice_f32(x.0, x.1, "batch norm backward x")?,
            slice_f32(g.0, g.1, "batch norm backward gradient")?,
            slice_f32(aux.0, aux.1, "batch norm backward statistics")?,
        );
        let a = args(d, eps);
        let (c, total) = (d.1, d.0 * d.1 * d.2);
        let out = dev.alloc_zeros::<f32>(total + 2 * c)?;
        let partial = dev.alloc_zeros::<f64>(2 * c * a.split as usize)?;
        let st = dev.alloc_zeros::<f64>(2 * c)?;
        let ptx = ptx_for(MODULE, super::cuda_source)?;
        let (stats, channels, elements) = configs(&a, total);
        let f = dev.get_or_load_custom_func("bn_bwd_partial", MODULE, &ptx)?;
        let mut l = f.builder();
        l.arg(&xv);
        l.arg(&gv);
        l.arg(&av);
        l.arg(&partial);
        l.arg(&a);
        unsafe { l.launch(stats) }.w()?;
        let f = dev.get_or_load_custom_func("bn_bwd_finalize", MODULE, &ptx)?;
        let mut l = f.builder();
        l.arg(&partial);
        l.arg(&st);
        l.arg(&out);
        l.arg(&a);
        unsafe { l.launch(channels) }.w()?;
        let f = dev.get_or_load_custom_func("bn_bwd_dx", MODULE, &ptx)?;
        let mut l = f.builder();
        l.arg(&xv);
        l.arg(&gv);
        l.arg(&av);
        l.arg(&st);
        l.arg(&out);
        l.arg(&a);
        unsafe { l.launch(elements) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(total + 2 * c)))
    }
}

/// Eval-mode batch norm: the running statistics (no update). `name` labels errors.
pub fn batch_norm_eval(x: &Tensor, p: &BatchNormParams, name: &str) -> Result<Tensor> {
    let c = check(x, p, name)?;
    let x = x.to_dtype(DType::F32)?;
    let mean = p.running_mean.as_tensor().detach().reshape((1, c, 1, 1))?;
    let inv = (p.running_var.as_tensor().detach() + p.eps)?.sqrt()?.recip()?.reshape((1, c, 1, 1))?;
    affine(x.broadcast_sub(&mean)?.broadcast_mul(&inv)?, p, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use candle_core::Device;

    /// f64 reference of train-mode BN: output, and the gradients of sum(y·g) w.r.t. x, γ, β.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &[f32],
        d: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
        g: &[f32],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let [n, c, h, w] = d;
        let m = (n * h * w) as f64;
        let idx = |ni: usize, ci: usize, k: usize| (ni * c + ci) * h * w + k;
        let (mut y, mut dx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
        let (mut dg, mut db, mut means, mut uvars) = (vec![0f64; c], vec![0f64; c], vec![0f64; c], vec![0f64; c]);
        for ci in 0..c {
            let vals: Vec<(usize, f64)> =
                (0..n).flat_map(|ni| (0..h * w).map(move |k| (ni, k))).map(|(ni, k)| (idx(ni, ci, k), 0.0)).collect();
            let mean = vals.iter().map(|&(e, _)| x[e] as f64).sum::<f64>() / m;
            let var = vals.iter().map(|&(e, _)| (x[e] as f64 - mean).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var + eps).sqrt();
            means[ci] = mean;
            uvars[ci] = var * m / (m - 1.0);
            let (mut sg, mut sgx) = (0f64, 0f64);
            for &(e, _) in &vals {
                let xh = (x[e] as f64 - mean) * inv;
                y[e] = xh * gamma[ci] as f64 + beta[ci] as f64;
                dg[ci] += g[e] as f64 * xh;
                db[ci] += g[e] as f64;
                sg += g[e] as f64 * gamma[ci] as f64;
                sgx += g[e] as f64 * gamma[ci] as f64 * xh;
            }
            for &(e, _) in &vals {
                let xh = (x[e] as f64 - mean) * inv;
                dx[e] = inv * (g[e] as f64 * gamma[ci] as f64 - sg / m - xh * sgx / m);
            }
        }
        (y, dx, dg, db, means, uvars)
    }

    #[test]
    fn train_mode_matches_a_float64_reference_including_gradients_and_running_stats() {
        let dev = Device::Cpu;
        let d = [3usize, 4, 5, 6];
        let xv: Vec<f32> =
            det_fill(d.iter().product(), 1, 2.0).iter().enumerate().map(|(i, v)| v + (i % 4) as f32).collect();
        let gamma = det_fill(4, 2, 1.0);
        let beta = det_fill(4, 3, 1.0);
        let gv = det_fill(xv.len(), 4, 1.0);
        let x = Var::from_vec(xv.clone(), d.to_vec(), &dev).unwrap();
        let gw = Var::from_vec(gamma.clone(), 4, &dev).unwrap();
        let gb = Var::from_vec(beta.clone(), 4, &dev).unwrap();
        let rm = Var::from_vec(vec![0.5f32; 4], 4, &dev).unwrap();
        let rv = Var::from_vec(vec![2.0f32; 4], 4, &dev).unwrap();
        let p = BatchNormParams {
            weight: Some(gw.as_tensor()),
            bias: Some(gb.as_tensor()),
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-3,
            momentum: 0.1,
        };
        let y = batch_norm_train(x.as_tensor(), &p, "bn").unwrap();
        let g = Tensor::from_vec(gv.clone(), d.to_vec(), &dev).unwrap();
        let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let (ry, rdx, rdg, rdb, means, uvars) = reference(&xv, d, &gamma, &beta, &gv, 1e-3);
        let close = |what: &str, got: Vec<f32>, want: &[f64], tol: f64| {
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!((*a as f64 - b).abs() <= tol * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
            }
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        close("y", flat(&y), &ry, 1e-5);
        close("dx", flat(grads.get(x.as_tensor()).unwrap()), &rdx, 1e-5);
        close("dgamma", flat(grads.get(gw.as_tensor()).unwrap()), &rdg, 1e-5);
        close("dbeta", flat(grads.get(gb.as_tensor()).unwrap()), &rdb, 1e-5);
        let want_rm: Vec<f64> = means.iter().map(|m| 0.9 * 0.5 + 0.1 * m).collect();
        let want_rv: Vec<f64> = uvars.iter().map(|v| 0.9 * 2.0 + 0.1 * v).collect();
        close("running_mean", flat(rm.as_tensor()), &want_rm, 1e-6);
        close("running_var", flat(rv.as_tensor()), &want_rv, 1e-6);
        // Running buffers receive no gradient.
        assert!(grads.get(rm.as_tensor()).is_none() && grads.get(rv.as_tensor()).is_none());

        // Eval mode uses the running statistics.
        let ye = batch_norm_eval(x.as_tensor(), &p, "bn").unwrap();
        let mut want = vec![0f64; xv.len()];
        for (e, v) in xv.iter().enumerate() {
            let ci = (e / 30) % 4;
            want[e] = (*v as f64 - want_rm[ci]) / (want_rv[ci] + 1e-3).sqrt() * gamma[ci] as f64 + beta[ci] as f64;
        }
        close("eval y", flat(&ye), &want, 1e-5);
    }

    #[test]
    fn fused_and_composed_paths_agree() {
        let dev = Device::Cpu;
        let d = (2usize, 3usize, 4usize, 5usize);
        let xv = det_fill(120, 7, 3.0);
        let gv = det_fill(120, 8, 1.0);
        let run = |fused: bool| {
            let x = Var::from_vec(xv.clone(), d, &dev).unwrap();
            let w = Var::from_vec(det_fill(3, 9, 1.0), 3, &dev).unwrap();
            let rm = Var::zeros(3, DType::F32, &dev).unwrap();
            let rv = Var::ones(3, DType::F32, &dev).unwrap();
            let p = BatchNormParams {
                weight: Some(w.as_tensor()),
                bias: None,
                running_mean: &rm,
                running_var: &rv,
                eps: 1e-5,
                momentum: 0.1,
            };
            let (y, _, _) = if fused {
                fused_train(x.as_tensor(), &p, 3).unwrap()
            } else {
                composed_train(x.as_tensor(), &p, 3).unwrap()
            };
            let g = Tensor::from_vec(gv.clone(), d, &dev).unwrap();
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (flat(&y), flat(grads.get(x.as_tensor()).unwrap()), flat(grads.get(w.as_tensor()).unwrap()))
        };
        let (a, b) = (run(true), run(false));
        for (u, v) in [(a.0, b.0), (a.1, b.1), (a.2, b.2)] {
            for (p, q) in u.iter().zip(&v) {
                assert!((p - q).abs() < 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
    }

    /// The CPU op with a direct `y` output against the packed `[y, mean, var]` op it replaces
    /// on the CPU (and that CUDA keeps): values, statistics and all three gradients bit for bit,
    /// with and without affine parameters.
    #[test]
    fn direct_output_op_matches_the_packed_op_bitwise() {
        let dev = Device::Cpu;
        let d = (3usize, 5usize, 4usize, 7usize);
        let xv = det_fill(3 * 5 * 4 * 7, 11, 2.5);
        let gv = det_fill(xv.len(), 12, 1.0);
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for affine in [true, false] {
            let run = |packed: bool| {
                let x = Var::from_vec(xv.clone(), d, &dev).unwrap();
                let w = Var::from_vec(if affine { det_fill(5, 13, 1.0) } else { vec![1.0; 5] }, 5, &dev).unwrap();
                let b = Var::from_vec(if affine { det_fill(5, 14, 1.0) } else { vec![0.0; 5] }, 5, &dev).unwrap();
                let (y, mean, var) = if packed {
                    let n = xv.len();
                    let pk = x.as_tensor().apply_op3(w.as_tensor(), b.as_tensor(), BnTrain { eps: 1e-5 }).unwrap();
                    let y = pk.narrow(0, 0, n).unwrap().reshape(d).unwrap();
                    (y, pk.narrow(0, n, 5).unwrap(), pk.narrow(0, n + 5, 5).unwrap())
                } else {
                    fused_train_cpu(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5, 5).unwrap()
                };
                let g = Tensor::from_vec(gv.clone(), d, &dev).unwrap();
                let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                [
                    flat(&y),
                    flat(&mean),
                    flat(&var),
                    flat(grads.get(x.as_tensor()).unwrap()),
                    flat(grads.get(w.as_tensor()).unwrap()),
                    flat(grads.get(b.as_tensor()).unwrap()),
                ]
            };
            let (new, old) = (run(false), run(true));
            for (k, what) in ["y", "mean", "var", "dx", "dweight", "dbias"].iter().enumerate() {
                assert_eq!(new[k], old[k], "{what} (affine {affine})");
            }
        }
    }

    /// Every plane kernel gives the same bits on every CPU path (portable, AVX2), at lengths
    /// around the lane count; the f64 reference test above checks the values themselves.
    #[test]
    fn plane_kernels_are_bitwise_equal_on_every_cpu_path() {
        for len in [1usize, 7, 8, 9, 64, 1000] {
            let x = det_fill(len, 11, 2.0);
            let g = det_fill(len, 12, 1.0);
            let (mu, inv, k, m, sg, sgx) = (0.125, 1.7, 0.3, len as f64, 0.4, -0.9);
            let p0 = CpuPath::Portable;
            let mut want = (vec![0f32; len], vec![0f32; len]);
            plane_affine(p0, &mut want.0, &x, 1.3, -0.2);
            plane_bwd_dx(p0, &mut want.1, &x, &g, mu, inv, k, m, sg, sgx);
            for path in CpuPath::available() {
                let what = format!("{path:?}, len {len}");
                assert_eq!(plane_sum(path, &x).to_bits(), plane_sum(p0, &x).to_bits(), "{what}");
                assert_eq!(plane_sq_dev(path, &x, mu).to_bits(), plane_sq_dev(p0, &x, mu).to_bits(), "{what}");
                let (a, b) = plane_bwd_sums(path, &g, &x, mu, inv);
                let (a0, b0) = plane_bwd_sums(p0, &g, &x, mu, inv);
                assert_eq!((a.to_bits(), b.to_bits()), (a0.to_bits(), b0.to_bits()), "{what}");
                let mut got = (vec![0f32; len], vec![0f32; len]);
                plane_affine(path, &mut got.0, &x, 1.3, -0.2);
                plane_bwd_dx(path, &mut got.1, &x, &g, mu, inv, k, m, sg, sgx);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.0), bits(&want.0), "{what}");
                assert_eq!(bits(&got.1), bits(&want.1), "{what}");
            }
        }
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let dev = Device::Cpu;
        let rm = Var::zeros(3, DType::F32, &dev).unwrap();
        let rv = Var::ones(3, DType::F32, &dev).unwrap();
        let p =
            BatchNormParams { weight: None, bias: None, running_mean: &rm, running_var: &rv, eps: 1e-5, momentum: 0.1 };
        let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        assert!(batch_norm_train(&x, &p, "bn").unwrap_err().to_string().contains("[N, 3, H, W]"));
    }
}
