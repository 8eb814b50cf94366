//! Shared pooling geometry, the CPU window helpers, and the CUDA source of the pooling kernels
//! ([`max_pool`](super::max_pool), [`avg_pool`](super::avg_pool)).
//!
//! Candle's own pools cannot express the EdMIPS networks: they have no padding, no ceil mode,
//! no `count_include_pad`, and their backward only supports `kernel == stride`. These ops follow
//! PyTorch's definitions exactly:
//!
//! * output size: [`PoolOpts::out_size`] (floor or ceil; in ceil mode the last window must
//!   start inside the input or the left padding);
//! * window `o`: rows `o·s - p .. o·s - p + k`, clipped to the input for the data; for the
//!   average pool's divisor with `count_include_pad` the window is clipped to the *padded*
//!   input (`min(start + k, H + p) - start`), so ceil-mode windows that run past the padding
//!   are not counted;
//! * max pooling pads with -inf (padded positions never win); the first maximum in scan order
//!   wins and NaN propagates, as in PyTorch.
//!
//! Backward passes are deterministic: each input element's gradient is the sum over the
//! windows that contain it in ascending output order, on the CPU (per-plane scatter) and on the
//! GPU (per-element gather) alike.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::graph::PoolOpts;

/// The geometry of one pooling call on an `[N, C, H, W]` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    /// `N · C` independent planes.
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Window (height, width).
    pub k: (usize, usize),
    /// Stride (height, width).
    pub s: (usize, usize),
    /// Padding (height, width).
    pub p: (usize, usize),
    /// Average pool: count padded zeros in the divisor.
    pub count_include_pad: bool,
}

impl PoolGeom {
    /// The geometry of pooling `x` (rank 4) with `opts`; `what` names the op in errors.
    pub fn new(x: &Tensor, opts: &PoolOpts, what: &str) -> Result<Self> {
        let (n, c, h, w) = x.dims4().map_err(|_| Error::Shape {
            context: what.to_string(),
            expected: "a rank-4 [N, C, H, W] input".into(),
            found: format!("{:?}", x.dims()),
        })?;
        if opts.stride.0 == 0 || opts.stride.1 == 0 || opts.kernel.0 == 0 || opts.kernel.1 == 0 {
            return Err(Error::msg(format!("{what}: kernel and stride must be positive, got {opts:?}")));
        }
        if 2 * opts.padding.0 > opts.kernel.0 || 2 * opts.padding.1 > opts.kernel.1 {
            return Err(Error::msg(format!("{what}: padding must be at most half the window, got {opts:?}")));
        }
        let oh = PoolOpts::out_size(h, opts.kernel.0, opts.stride.0, opts.padding.0, opts.ceil_mode);
        let ow = PoolOpts::out_size(w, opts.kernel.1, opts.stride.1, opts.padding.1, opts.ceil_mode);
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(PoolGeom {
                planes: n * c,
                h,
                w,
                oh,
                ow,
                k: opts.kernel,
                s: opts.stride,
                p: opts.padding,
                count_include_pad: opts.count_include_pad,
            }),
            _ => Err(Error::Shape {
                context: what.to_string(),
                expected: format!("an input of at least {}x{} after padding", opts.kernel.0, opts.kernel.1),
                found: format!("{h}x{w}"),
            }),
        }
    }

    /// Window rows (or columns) of output index `o` along one axis: `(start, end)` clipped to
    /// the data, and the padded extent `min(start + k, len + p) - start` before clipping.
    #[inline]
    pub fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize, usize) {
        let start = (o * s) as isize - p as isize;
        let end_padded = (start + k as isize).min((len + p) as isize);
        let extent = (end_padded - start) as usize;
        let end = (start + k as isize).min(len as isize).max(0) as usize;
        (start.max(0) as usize, end, extent)
    }

    /// Elements per input plane.
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Elements per output plane.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
}

/// CUDA source of the pooling kernels (one thread per output element forward, one thread per
/// input element backward, gathering over the windows that contain it in ascending order).
pub const POOL_CUDA_SOURCE: &str = include_str!("pool.cu");

fn pool_source() -> String {
    POOL_CUDA_SOURCE.to_string()
}

crate::register_kernel_source!(name: "edmips_pool", source: pool_source);

/// The index of output window `o` range along one axis that contains input index `i`:
/// `[lo, hi)` (the CPU mirror of the CUDA `edmips_covering`).
#[inline]
pub fn covering(i: usize, k: usize, s: usize, p: usize, out: usize) -> (usize, usize) {
    let t = i as isize + p as isize - k as isize + 1;
    let lo = if t <= 0 { 0 } else { (t as usize).div_ceil(s) };
    let hi = ((i + p) / s + 1).min(out);
    (lo, hi)
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    //! Launches of the pooling kernels.
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Shape};

    use super::PoolGeom;
    use crate::ops::cuda::{grid, ptx_for, slice_f32};
    use crate::ops::kernels::CUDA_BLOCK;

    /// Kernel argument block; must match `struct PoolArgs` in the CUDA source.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(crate) struct PoolArgs {
        planes: i64,
        h: i32,
        w: i32,
        oh: i32,
        ow: i32,
        kh: i32,
        kw: i32,
        sh: i32,
        sw: i32,
        ph: i32,
        pw: i32,
        cip: i32,
    }
    unsafe impl DeviceRepr for PoolArgs {}

    fn args(g: &PoolGeom) -> PoolArgs {
        PoolArgs {
            planes: g.planes as i64,
            h: g.h as i32,
            w: g.w as i32,
            oh: g.oh as i32,
            ow: g.ow as i32,
            kh: g.k.0 as i32,
            kw: g.k.1 as i32,
            sh: g.s.0 as i32,
            sw: g.s.1 as i32,
            ph: g.p.0 as i32,
            pw: g.p.1 as i32,
            cip: i32::from(g.count_include_pad),
        }
    }

    /// Runs `kernel` with inputs `ins`, producing `n_out` elements of shape `shape`.
    pub(crate) fn launch(
        kernel: &str,
        g: &PoolGeom,
        ins: &[(&CudaStorage, &Layout)],
        n_out: usize,
        shape: Shape,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &ins[0].0.device;
        let views = ins.iter().map(|(s, l)| slice_f32(s, l, kernel)).collect::<candle_core::Result<Vec<_>>>()?;
        let out = dev.alloc_zeros::<f32>(n_out)?;
        let ptx = ptx_for("edmips_pool", super::pool_source)?;
        let f = dev.get_or_load_custom_func(kernel, "edmips_pool", &ptx)?;
        let cfg = LaunchConfig { grid_dim: (grid(n_out), 1, 1), block_dim: (CUDA_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let a = args(g);
        let mut b = f.builder();
        for v in &views {
            b.arg(v);
        }
        b.arg(&out);
        b.arg(&a);
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_is_the_inverse_of_window() {
        for &(len, k, s, p, ceil) in
            &[(7, 3, 2, 1, false), (112, 3, 2, 0, true), (14, 2, 2, 0, true), (9, 3, 1, 1, false)]
        {
            let out = PoolOpts::out_size(len, k, s, p, ceil).unwrap();
            for i in 0..len {
                let (lo, hi) = covering(i, k, s, p, out);
                let want: Vec<usize> = (0..out)
                    .filter(|&o| {
                        let (a, b, _) = PoolGeom::window(o, k, s, p, len);
                        a <= i && i < b
                    })
                    .collect();
                assert_eq!((lo..hi).collect::<Vec<_>>(), want, "len {len} k {k} s {s} p {p} i {i}");
            }
        }
    }
}
