//! Custom tensor ops: what candle lacks or does slowly, with CPU kernels and (with the `cuda`
//! feature) CUDA kernels compiled by NVRTC.
//!
//! * [`mixture`]: the fused quantizer mixture `Σ_i p_i · Q_i(x)` (forward, and dx/dp backward).
//! * [`conv`]: convolution with per-side padding.
//! * [`round`]: round half to even, the straight-through round and LSQ's gradient scale, from
//!   tensor ops (any device), for quantizers that learn parameters.
//! * [`stats`]: detached statistics (the unbiased std of a weight tensor).
//! * [`max_pool`], [`avg_pool`] (geometry and CUDA source in [`pool`]): pooling with padding,
//!   ceil mode and `count_include_pad`, with backward for any kernel and stride.
//! * [`integer_conv`]: the forward of a convolution of two integer-grid operands (a quantized
//!   conv in retraining) as an exact 8-bit integer product (AVX-512 VNNI).
//! * `im2col_batched`: the CPU convolution's im2col products for small planes, the whole batch
//!   in one product.
//! * [`short_k_gemm`]: an AVX2/FMA matrix product for short inner dimensions, without packing
//!   (the Winograd products of thin layers).
//! * [`winograd`]: Winograd F(2×2, 3×3) for the CPU convolution's 3×3 stride-1 layers.
//! * [`batch_norm`]: train (batch statistics, running-stat update) and eval batch norm.
//! * [`bn_add`]: train-mode batch norm and the residual addition after it, as one CPU op.
//! * [`bn_mixture`]: train-mode batch norm and a quantizer mixture after it, as one CPU op.
//! * `blas` (`openblas` feature): the system OpenBLAS's SGEMM for the convolution's large
//!   products.
//! * [`cpu_path`]: the run-time choice between the portable and the AVX2 build of a kernel.
//! * [`lanes`]: fixed-order f64 partial sums that vectorise (the CPU kernels' reductions).
//! * [`consts`]: small constant tensors built once per device (no host-to-device copy per
//!   layer per step).
//! * [`kernels`]: the registry of CUDA sources (`.cu` files beside their ops) and the
//!   constants they share with Rust; `cuda`: NVRTC plumbing (`cuda` feature).
//!
//! Channel concatenation is candle's `Tensor::cat` (it has a backward), and global average
//! pooling is candle's `mean_keepdim`.

pub mod avg_pool;
pub mod batch_norm;
#[cfg(feature = "openblas")]
pub mod blas;
pub mod bn_add;
pub mod bn_mixture;
pub mod consts;
pub mod conv;
pub mod conv_cpu;
pub mod cpu_path;
#[cfg(feature = "cuda")]
pub mod cuda;
mod im2col_batched;
pub mod integer_conv;
pub mod kernels;
pub mod lanes;
pub mod max_pool;
pub mod mixture;
pub mod pool;
pub mod round;
pub mod short_k_gemm;
pub mod stats;
pub mod winograd;

use candle_core::{CpuStorage, Layout};

/// The contiguous f32 slice of a CPU storage, or an error naming the op.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: expected f32 storage, got {:?}", candle_core::backend::BackendStorage::dtype(s))
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// An f32 buffer of `n` elements for an op's output that its kernel writes in full: not
/// zero-filled first. (`vec![0.0; n]` on memory the allocator reuses is a `memset` pass over
/// the whole activation, about 5% of a ResNet-20 step across the ops that use this.) It is
/// candle's own uninitialised CPU allocation, the one its built-in ops use for their outputs.
/// In the crate's own unit tests and in debug builds the buffer is filled with NaN, so a
/// kernel that leaves an element unwritten fails its tests.
///
/// # Safety
/// The caller writes every element before any is read and before the buffer leaves the op
/// (the contract of candle's `BackendDevice::alloc_uninit`).
pub(crate) unsafe fn output_buffer(n: usize) -> candle_core::Result<Vec<f32>> {
    use candle_core::backend::BackendDevice;
    // SAFETY: the caller's contract above is candle's.
    let storage = unsafe {
        candle_core::cpu_backend::CpuDevice.alloc_uninit(&candle_core::Shape::from(n), candle_core::DType::F32)?
    };
    let CpuStorage::F32(mut v) = storage else {
        candle_core::bail!("internal error: an f32 allocation returned another type");
    };
    if cfg!(any(test, debug_assertions)) {
        v.fill(f32::NAN);
    }
    Ok(v)
}
