//! The fused quantizer mixture: `x̂ = Σ_i p_i · Q_i(x)` in one pass forward, and `dx` and `dp`
//! in one pass backward, as a candle custom op with a multi-threaded CPU kernel and a CUDA
//! kernel.
//!
//! A quantizer family only provides its per-element function through [`ElementQuantizer`]:
//! `q(x; θ_i)` and its straight-through derivative `ste(x; θ_i)`, where `θ_i` are the
//! `PARAMS` parameters of branch `i` (for example step and clip threshold). The op does the
//! rest:
//!
//! * forward: `out[e] = 0 + p_0·q(x_e; θ_0) + p_1·q(x_e; θ_1) + ...` in f32, in branch order
//!   (the reference's summation order);
//! * backward, given `g = dL/dx̂`: `dx[e] = g[e] · Σ_i p_i · ste(x_e; θ_i)` and
//!   `dp_i = Σ_e q(x_e; θ_i) · g[e]`, accumulated in f64 in fixed lanes per fixed-size chunk
//!   and summed in chunk order, so the result does not depend on the number of threads.
//!
//! The branch parameters are a tensor computed on the device by ordinary tensor ops (the
//! Gaussian quantizer's steps depend on `std(W)`), so nothing waits for the host.
//!
//! The CUDA kernel is the plugin's CUDA C element functions (`edmips_q`, `edmips_ste`) pasted
//! into a template and compiled at run time with NVRTC (`--fmad=false`, IEEE division), one
//! module per quantizer family. Every family registers its source with
//! [`register_kernel_source!`](crate::register_kernel_source) so a test can compile them all.

use std::marker::PhantomData;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;
use super::lanes::{reduce_dot, sum_lanes, Wide};
use crate::error::{Error, Result};
use crate::ops::kernels::CUDA_BLOCK;

/// Most branches a mixture may have (the CUDA kernel keeps one accumulator per branch).
pub const MAX_BRANCHES: usize = 16;

/// Elements per work chunk of the CPU kernels. Fixed, so partial sums (and thus results)
/// are the same whatever the number of threads.
pub const CHUNK: usize = 1 << 14;

/// Lanes the `dp` partial sums of one chunk are kept in ([`super::lanes`]): element `e` of a
/// chunk adds to lane `e % DP_LANES`, so the f64 accumulation vectorises (one serial add chain
/// per element was 9% of a ResNet-20 search step) and stays a fixed order on every path.
const DP_LANES: usize = super::lanes::LANES;

/// A per-element quantizer family, the unit the fused mixture op is generic over.
pub trait ElementQuantizer: Send + Sync + 'static {
    /// Unique name, used as the CUDA module name (letters, digits, `_`).
    const NAME: &'static str;
    /// Number of f32 parameters per branch.
    const PARAMS: usize;
    /// CUDA C source defining `__device__ float edmips_q(float x, const float* prm)` and
    /// `__device__ float edmips_ste(float x, const float* prm)`, the same functions as
    /// [`q`](Self::q) and [`ste`](Self::ste).
    const CUDA_SOURCE: &'static str;

    /// The quantized value of `x` for one branch's parameters `prm` (length `PARAMS`).
    fn q(x: f32, prm: &[f32]) -> f32;

    /// The straight-through derivative `dq/dx` used in the backward pass.
    fn ste(x: f32, prm: &[f32]) -> f32;
}

/// The mixture `Σ_i probs[i] · q(x; params[i])` with gradients to `x` and `probs`.
///
/// `probs` is rank 1 (`k` branches), `params` is `[k, Q::PARAMS]` and receives no gradient.
/// The result has `x`'s shape and is f32.
pub fn mixture<Q: ElementQuantizer>(x: &Tensor, probs: &Tensor, params: &Tensor) -> Result<Tensor> {
    let (k, pp) = packed_weights::<Q>(probs, params)?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    Ok(x.apply_op2(&pp, MixtureOp::<Q> { k, _q: PhantomData })?)
}

/// Checks a mixture's `probs` (`[k]`) and `params` (`[k, Q::PARAMS]`) and packs them as the
/// ops take them: `(k, [p_0..p_{k-1}, θ_0.., θ_1.., ...])`, gradients flowing to `probs` only.
pub(crate) fn packed_weights<Q: ElementQuantizer>(probs: &Tensor, params: &Tensor) -> Result<(usize, Tensor)> {
    let k = probs.dims1().map_err(|_| shape_err::<Q>("mixing weights", "rank 1", probs))?;
    if k == 0 || k > MAX_BRANCHES {
        return Err(Error::msg(format!("{}: a mixture needs 1..={MAX_BRANCHES} branches, got {k}", Q::NAME)));
    }
    if params.dims() != [k, Q::PARAMS] {
        return Err(shape_err::<Q>("branch parameters", &format!("[{k}, {}]", Q::PARAMS), params));
    }
    let pp = Tensor::cat(&[&probs.to_dtype(DType::F32)?, &params.detach().to_dtype(DType::F32)?.flatten_all()?], 0)?;
    Ok((k, pp))
}

fn shape_err<Q: ElementQuantizer>(what: &str, expected: &str, t: &Tensor) -> Error {
    Error::Shape {
        context: format!("{} mixture {what}", Q::NAME),
        expected: expected.into(),
        found: format!("{:?}", t.dims()),
    }
}

/// The forward custom op; arguments are `x` and `pp = [p_0..p_{k-1}, θ_0.., θ_1.., ...]`.
struct MixtureOp<Q> {
    k: usize,
    _q: PhantomData<fn() -> Q>,
}

/// The backward custom op; arguments are `x`, `pp` and `g`, output `[dx (n), dp (k)]`.
struct MixtureBwdOp<Q> {
    k: usize,
    _q: PhantomData<fn() -> Q>,
}

pub use super::cpu_path::CpuPath;

/// Forward over one chunk, branch by branch: `o[e] = 0 + p_0·q_0(x_e) + p_1·q_1(x_e) + ...`,
/// the same additions in the same order per element as an element-by-element loop, written so
/// the inner loop over elements vectorises. The first branch writes `0 + p_0·q_0` (the `0 +`
/// kept: it turns `-0` into `+0` as the element loop does), so no pass clears `o` first.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn forward_chunk<Q: ElementQuantizer>(o: &mut [f32], xs: &[f32], probs: &[f32], params: &[f32]) {
    if probs.is_empty() {
        o.fill(0.0);
    }
    for (b, &p) in probs.iter().enumerate() {
        let prm = &params[b * Q::PARAMS..(b + 1) * Q::PARAMS];
        if b == 0 {
            for (oe, &xe) in o.iter_mut().zip(xs) {
                *oe = 0.0 + p * Q::q(xe, prm);
            }
        } else {
            for (oe, &xe) in o.iter_mut().zip(xs) {
                *oe += p * Q::q(xe, prm);
            }
        }
    }
}

/// Backward over one chunk: `d[e] = g[e] · Σ_b p_b·ste_b(x_e)` (vectorised loops, the sum in
/// branch order from `0`), and returns `dp_b = Σ_e q_b(x_e)·g[e]` accumulated in f64 in
/// [`DP_LANES`] lanes. The first branch's loop writes `0 + p_0·ste_0` and the last one's
/// multiplies by `g` as it adds (one loop for a single branch, a retrained layer's case): the
/// operations of clearing `d`, adding branch by branch and scaling by `g` in passes of their own,
/// in the same order, without those passes.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn backward_chunk<Q: ElementQuantizer, W: Wide>(
    d: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    probs: &[f32],
    params: &[f32],
) -> [f64; MAX_BRANCHES] {
    let mut dp = [0f64; MAX_BRANCHES];
    let k = probs.len();
    if k == 0 {
        for (de, &ge) in d.iter_mut().zip(gs) {
            *de = 0.0 * ge;
        }
    }
    for (b, &p) in probs.iter().enumerate() {
        let prm = &params[b * Q::PARAMS..(b + 1) * Q::PARAMS];
        match (b == 0, b + 1 == k) {
            (true, true) => {
                for ((de, &xe), &ge) in d.iter_mut().zip(xs).zip(gs) {
                    *de = (0.0 + p * Q::ste(xe, prm)) * ge;
                }
            }
            (true, false) => {
                for (de, &xe) in d.iter_mut().zip(xs) {
                    *de = 0.0 + p * Q::ste(xe, prm);
                }
            }
            (false, true) => {
                for ((de, &xe), &ge) in d.iter_mut().zip(xs).zip(gs) {
                    *de = (*de + p * Q::ste(xe, prm)) * ge;
                }
            }
            (false, false) => {
                for (de, &xe) in d.iter_mut().zip(xs) {
                    *de += p * Q::ste(xe, prm);
                }
            }
        }
        dp[b] = reduce_dot::<W>(xs, gs, |xe| Q::q(xe, prm));
    }
    dp
}

/// Forward over one chunk, element by element (the portable path).
fn forward_chunk_elementwise<Q: ElementQuantizer>(o: &mut [f32], xs: &[f32], probs: &[f32], params: &[f32]) {
    for (oe, &xe) in o.iter_mut().zip(xs) {
        let mut acc = 0.0f32;
        for (b, &p) in probs.iter().enumerate() {
            acc += p * Q::q(xe, &params[b * Q::PARAMS..(b + 1) * Q::PARAMS]);
        }
        *oe = acc;
    }
}

/// Backward over one chunk, element by element (the portable path): `q` and `ste` once per
/// element and branch.
fn backward_chunk_elementwise<Q: ElementQuantizer>(
    d: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    probs: &[f32],
    params: &[f32],
) -> [f64; MAX_BRANCHES] {
    let mut lanes = [[0f64; DP_LANES]; MAX_BRANCHES];
    for (e, ((de, &xe), &ge)) in d.iter_mut().zip(xs).zip(gs).enumerate() {
        let mut s = 0.0f32;
        for (b, &p) in probs.iter().enumerate() {
            let prm = &params[b * Q::PARAMS..(b + 1) * Q::PARAMS];
            s += p * Q::ste(xe, prm);
            lanes[b][e % DP_LANES] += Q::q(xe, prm) as f64 * ge as f64;
        }
        *de = ge * s;
    }
    let mut dp = [0f64; MAX_BRANCHES];
    for (d, l) in dp.iter_mut().zip(&lanes) {
        *d = sum_lanes(l);
    }
    dp
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_chunk_avx2<Q: ElementQuantizer>(o: &mut [f32], xs: &[f32], probs: &[f32], params: &[f32]) {
    forward_chunk::<Q>(o, xs, probs, params)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn backward_chunk_avx2<Q: ElementQuantizer>(
    d: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    probs: &[f32],
    params: &[f32],
) -> [f64; MAX_BRANCHES] {
    backward_chunk::<Q, super::lanes::avx2::F64x8>(d, xs, gs, probs, params)
}

/// The element-by-element kernels (the portable path's chunk functions), single-threaded:
/// `(y, dx, dp)` for upstream gradient `g`, with the same chunking of the `dp` partial sums. The
/// slow path the vectorised kernels are tested against ([`cpu_forward_on`], [`cpu_backward_on`] must
/// match it bit for bit) and benchmarked against.
pub fn cpu_reference<Q: ElementQuantizer>(
    x: &[f32],
    probs: &[f32],
    params: &[f32],
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let k = probs.len();
    let (mut y, mut dx, mut dp) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0f64; k]);
    for (((o, d), xs), gs) in y.chunks_mut(CHUNK).zip(dx.chunks_mut(CHUNK)).zip(x.chunks(CHUNK)).zip(g.chunks(CHUNK)) {
        forward_chunk_elementwise::<Q>(o, xs, probs, params);
        let part = backward_chunk_elementwise::<Q>(d, xs, gs, probs, params);
        for b in 0..k {
            dp[b] += part[b];
        }
    }
    (y, dx, dp.into_iter().map(|v| v as f32).collect())
}

/// CPU forward kernel over plain slices, on the fastest path this processor has (public for
/// benchmarks and tests).
pub fn cpu_forward<Q: ElementQuantizer>(x: &[f32], probs: &[f32], params: &[f32], out: &mut [f32]) {
    cpu_forward_on::<Q>(CpuPath::detect(), x, probs, params, out)
}

/// [`cpu_forward`] on a given path. Every path gives bitwise the same result: the same f32
/// operations in the same order (no fused multiply-add), only wider.
pub fn cpu_forward_on<Q: ElementQuantizer>(path: CpuPath, x: &[f32], probs: &[f32], params: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, xs)| forward_block::<Q>(path, o, xs, probs, params));
}

/// The forward over one block of elements (any length), single-threaded, on `path`: what
/// [`cpu_forward_on`] runs per chunk, and what fused ops run on blocks of their own.
pub(crate) fn forward_block<Q: ElementQuantizer>(
    path: CpuPath,
    o: &mut [f32],
    xs: &[f32],
    probs: &[f32],
    params: &[f32],
) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: checked here that the processor has AVX2.
        CpuPath::Avx2 if std::is_x86_feature_detected!("avx2") => unsafe {
            forward_chunk_avx2::<Q>(o, xs, probs, params)
        },
        _ => forward_chunk_elementwise::<Q>(o, xs, probs, params),
    }
}

/// The backward over one block of elements (at most [`CHUNK`]: the `dp` partial sums are per
/// chunk), single-threaded, on `path`: writes `d` and returns the block's `dp` partials.
pub(crate) fn backward_block<Q: ElementQuantizer>(
    path: CpuPath,
    d: &mut [f32],
    xs: &[f32],
    gs: &[f32],
    probs: &[f32],
    params: &[f32],
) -> [f64; MAX_BRANCHES] {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: checked here that the processor has AVX2.
        CpuPath::Avx2 if std::is_x86_feature_detected!("avx2") => unsafe {
            backward_chunk_avx2::<Q>(d, xs, gs, probs, params)
        },
        _ => backward_chunk_elementwise::<Q>(d, xs, gs, probs, params),
    }
}

/// CPU backward kernel over plain slices: writes `dx` and returns `dp`, on the fastest path
/// this processor has (public for benchmarks).
pub fn cpu_backward<Q: ElementQuantizer>(
    x: &[f32],
    probs: &[f32],
    params: &[f32],
    g: &[f32],
    dx: &mut [f32],
) -> Vec<f32> {
    cpu_backward_on::<Q>(CpuPath::detect(), x, probs, params, g, dx)
}

/// [`cpu_backward`] on a given path (bitwise the same on every path).
pub fn cpu_backward_on<Q: ElementQuantizer>(
    path: CpuPath,
    x: &[f32],
    probs: &[f32],
    params: &[f32],
    g: &[f32],
    dx: &mut [f32],
) -> Vec<f32> {
    let k = probs.len();
    let partials: Vec<[f64; MAX_BRANCHES]> = dx
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .map(|((d, xs), gs)| backward_block::<Q>(path, d, xs, gs, probs, params))
        .collect();
    let mut dp = vec![0f64; k];
    for part in &partials {
        for b in 0..k {
            dp[b] += part[b];
        }
    }
    dp.into_iter().map(|v| v as f32).collect()
}

impl<Q: ElementQuantizer> CustomOp2 for MixtureOp<Q> {
    fn name(&self) -> &'static str {
        "edmips-mixture"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "mixture op x")?;
        let pp = cpu_slice(s2, l2, "mixture op weights")?;
        let (probs, params) = pp.split_at(self.k);
        // SAFETY: `cpu_forward` writes every element (each chunk in full).
        let mut out = unsafe { super::output_buffer(x.len())? };
        cpu_forward::<Q>(x, probs, params, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        launch::forward::<Q>(self.k, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        pp: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count();
        let g = g.contiguous()?;
        let packed = x.apply_op3_no_bwd(pp, &g, &MixtureBwdOp::<Q> { k: self.k, _q: PhantomData })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dp = packed.narrow(0, n, self.k)?;
        let zeros = Tensor::zeros(pp.elem_count() - self.k, DType::F32, pp.device())?;
        Ok((Some(dx), Some(Tensor::cat(&[&dp, &zeros], 0)?)))
    }
}

impl<Q: ElementQuantizer> CustomOp3 for MixtureBwdOp<Q> {
    fn name(&self) -> &'static str {
        "edmips-mixture-bwd"
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
        let x = cpu_slice(s1, l1, "mixture op x")?;
        let pp = cpu_slice(s2, l2, "mixture op weights")?;
        let g = cpu_slice(s3, l3, "mixture op gradient")?;
        let (probs, params) = pp.split_at(self.k);
        let n = x.len();
        // SAFETY: `cpu_backward` writes all of `dx` (each chunk in full), `dp` the rest.
        let mut out = unsafe { super::output_buffer(n + self.k)? };
        let dp = cpu_backward::<Q>(x, probs, params, g, &mut out[..n]);
        out[n..].copy_from_slice(&dp);
        Ok((CpuStorage::F32(out), Shape::from(n + self.k)))
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
        launch::backward::<Q>(self.k, s1, l1, s2, l2, s3, l3)
    }
}

/// The full CUDA C source of a family's mixture kernels: its element functions and the
/// `mix_fwd`, `mix_bwd` and `mix_reduce` kernels.
pub fn cuda_source<Q: ElementQuantizer>() -> String {
    format!(
        "// edmips mixture kernels for `{}`\n#define EDMIPS_MAXK {MAX_BRANCHES}\n#define EDMIPS_BLOCK {CUDA_BLOCK}\n{}\n{}\n",
        Q::NAME,
        Q::CUDA_SOURCE,
        include_str!("mixture.cu")
    )
}

#[cfg(feature = "cuda")]
mod launch {
    //! Launches of the mixture kernels.
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Shape};

    use super::{cuda_source, ElementQuantizer, MAX_BRANCHES};
    use crate::ops::cuda::{grid, ptx_for, slice_f32};
    use crate::ops::kernels::CUDA_BLOCK;

    fn module_name<Q: ElementQuantizer>() -> String {
        format!("edmips_mix_{}", Q::NAME)
    }

    /// Launches the forward mixture kernel.
    pub(super) fn forward<Q: ElementQuantizer>(
        k: usize,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        debug_assert!(k <= MAX_BRANCHES);
        let dev = &s1.device;
        let x = slice_f32(s1, l1, "x")?;
        let pp = slice_f32(s2, l2, "weights")?;
        let n = l1.shape().elem_count();
        let out = dev.alloc_zeros::<f32>(n)?;
        let ptx = ptx_for(Q::NAME, cuda_source::<Q>)?;
        let f = dev.get_or_load_custom_func("mix_fwd", &module_name::<Q>(), &ptx)?;
        let cfg = LaunchConfig { grid_dim: (grid(n), 1, 1), block_dim: (CUDA_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let (n64, ki, np) = (n as u64, k as i32, Q::PARAMS as i32);
        let mut b = f.builder();
        b.arg(&x);
        b.arg(&pp);
        b.arg(&out);
        b.arg(&n64);
        b.arg(&ki);
        b.arg(&np);
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), l1.shape().clone()))
    }

    /// Launches the backward mixture kernels: `[dx (n), dp (k)]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward<Q: ElementQuantizer>(
        k: usize,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &s1.device;
        let x = slice_f32(s1, l1, "x")?;
        let pp = slice_f32(s2, l2, "weights")?;
        let g = slice_f32(s3, l3, "gradient")?;
        let n = l1.shape().elem_count();
        let blocks = grid(n);
        let out = dev.alloc_zeros::<f32>(n + k)?;
        let partial = dev.alloc_zeros::<f64>(blocks as usize * k)?;
        let ptx = ptx_for(Q::NAME, cuda_source::<Q>)?;
        let module = module_name::<Q>();
        let (n64, ki, np, nb) = (n as u64, k as i32, Q::PARAMS as i32, blocks as i32);

        let f = dev.get_or_load_custom_func("mix_bwd", &module, &ptx)?;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (CUDA_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let mut b = f.builder();
        b.arg(&x);
        b.arg(&pp);
        b.arg(&g);
        b.arg(&out);
        b.arg(&partial);
        b.arg(&n64);
        b.arg(&ki);
        b.arg(&np);
        unsafe { b.launch(cfg) }.w()?;

        let f = dev.get_or_load_custom_func("mix_reduce", &module, &ptx)?;
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (MAX_BRANCHES as u32, 1, 1), shared_mem_bytes: 0 };
        let mut b = f.builder();
        b.arg(&partial);
        b.arg(&out);
        b.arg(&n64);
        b.arg(&ki);
        b.arg(&nb);
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(n + k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A test family: q(x) = a·x² (smooth, so finite differences apply), ste = 2·a·x.
    struct Square;
    impl ElementQuantizer for Square {
        const NAME: &'static str = "test_square";
        const PARAMS: usize = 1;
        const CUDA_SOURCE: &'static str = "__device__ float edmips_q(float x, const float* p) { return p[0]*x*x; }\n\
             __device__ float edmips_ste(float x, const float* p) { return 2.0f*p[0]*x; }";
        fn q(x: f32, p: &[f32]) -> f32 {
            p[0] * x * x
        }
        fn ste(x: f32, p: &[f32]) -> f32 {
            2.0 * p[0] * x
        }
    }

    #[test]
    fn forward_and_backward_match_composed_autograd() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 17; // several chunks and a ragged tail
        let xs: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let x = Var::from_vec(xs.clone(), n, &dev).unwrap();
        let p = Var::from_vec(vec![0.2f32, 0.5, 0.3], 3, &dev).unwrap();
        let params = Tensor::new(&[[1.5f32], [-0.5], [0.25]], &dev).unwrap();
        let g: Vec<f32> = (0..n).map(|i| ((i * 31 % 17) as f32) / 17.0 - 0.5).collect();
        let g = Tensor::from_vec(g, n, &dev).unwrap();

        let y = mixture::<Square>(x.as_tensor(), p.as_tensor(), &params).unwrap();
        let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let dp = grads.get(p.as_tensor()).unwrap().to_vec1::<f32>().unwrap();

        // Independent f64 reference.
        let a = [1.5f64, -0.5, 0.25];
        let pv = [0.2f64, 0.5, 0.3];
        let gv = g.to_vec1::<f32>().unwrap();
        let yv = y.to_vec1::<f32>().unwrap();
        let mut dp_ref = [0f64; 3];
        for i in 0..n {
            let xe = xs[i] as f64;
            let y_ref: f64 = (0..3).map(|b| pv[b] * a[b] * xe * xe).sum();
            assert!((yv[i] as f64 - y_ref).abs() < 1e-6, "y[{i}]");
            let dx_ref: f64 = gv[i] as f64 * (0..3).map(|b| pv[b] * 2.0 * a[b] * xe).sum::<f64>();
            assert!((dx[i] as f64 - dx_ref).abs() < 1e-6, "dx[{i}]");
            for b in 0..3 {
                dp_ref[b] += a[b] * xe * xe * gv[i] as f64;
            }
        }
        for b in 0..3 {
            assert!((dp[b] as f64 - dp_ref[b]).abs() < 1e-3 * dp_ref[b].abs().max(1.0), "dp[{b}]");
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let n = 5 * CHUNK + 3;
        let xs: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
        let gs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos()).collect();
        let probs = [0.25f32, 0.75];
        let params = [0.5f32, 2.0];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut dx = vec![0f32; n];
                let dp = cpu_backward::<Square>(&xs, &probs, &params, &gs, &mut dx);
                (dx, dp)
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn rejects_bad_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let p = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let bad = Tensor::zeros((3, 1), DType::F32, &dev).unwrap();
        let e = mixture::<Square>(&x, &p, &bad).unwrap_err().to_string();
        assert!(e.contains("expected [2, 1]"), "{e}");
    }

    /// Central finite differences in f64 of `L = Σ g·mixture(x, p)` against the op's backward:
    /// w.r.t. `p` (L is linear in p, so the difference quotient is exact up to rounding) and
    /// w.r.t. `x` for the smooth test family.
    #[test]
    fn backward_passes_finite_difference_checks() {
        let dev = Device::Cpu;
        let n = 257;
        let xs = crate::init::det_fill(n, 5, 1.5);
        let gs = crate::init::det_fill(n, 6, 1.0);
        let pv = [0.3f32, 0.45, 0.25];
        let params = Tensor::new(&[[1.25f32], [-0.75], [0.5]], &dev).unwrap();
        let prm = [1.25f32, -0.75, 0.5];
        let loss = |x: &[f32], p: &[f32]| -> f64 {
            let mut out = vec![0f32; n];
            cpu_forward::<Square>(x, p, &prm, &mut out);
            out.iter().zip(&gs).map(|(o, g)| *o as f64 * *g as f64).sum()
        };
        let x = Var::from_vec(xs.clone(), n, &dev).unwrap();
        let p = Var::from_vec(pv.to_vec(), 3, &dev).unwrap();
        let y = mixture::<Square>(x.as_tensor(), p.as_tensor(), &params).unwrap();
        let g = Tensor::from_vec(gs.clone(), n, &dev).unwrap();
        let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let dp = grads.get(p.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        for b in 0..3 {
            let (mut hi, mut lo) = (pv, pv);
            hi[b] += eps;
            lo[b] -= eps;
            let fd = (loss(&xs, &hi) - loss(&xs, &lo)) / (2.0 * eps as f64);
            assert!((fd - dp[b] as f64).abs() < 1e-3 * fd.abs().max(1.0), "dp[{b}] {} vs fd {fd}", dp[b]);
        }
        for i in [0, 17, 100, 256] {
            let (mut hi, mut lo) = (xs.clone(), xs.clone());
            hi[i] += eps;
            lo[i] -= eps;
            let fd = (loss(&hi, &pv) - loss(&lo, &pv)) / (2.0 * eps as f64);
            assert!((fd - dx[i] as f64).abs() < 2e-3, "dx[{i}] {} vs fd {fd}", dx[i]);
        }
    }
}
