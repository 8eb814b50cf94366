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
pub const POOL_CUDA_SOURCE: &str = r#"
// edmips pooling kernels
struct PoolArgs { long long planes; int h, w, oh, ow, kh, kw, sh, sw, ph, pw, cip; };

__device__ __forceinline__ void edmips_win(int o, int k, int s, int p, int len, int* a, int* b, int* ext) {
    int start = o * s - p;
    int endp = min(start + k, len + p);
    *ext = endp - start;
    *b = max(min(start + k, len), 0);
    *a = max(start, 0);
}

__device__ __forceinline__ int edmips_argmax(const float* xp, const PoolArgs& g, int oy, int ox) {
    int y0, y1, x0, x1, e;
    edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &e);
    edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &e);
    float best = __int_as_float(0xff800000);
    int idx = y0 * g.w + x0;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            float v = xp[iy * g.w + ix];
            if (v > best || v != v) { best = v; idx = iy * g.w + ix; }
        }
    return idx;
}

extern "C" __global__ void maxpool_fwd(const float* __restrict__ x, float* __restrict__ y, PoolArgs g) {
    long long total = g.planes * g.oh * g.ow;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ox = (int)(i % g.ow);
        int oy = (int)((i / g.ow) % g.oh);
        long long p = i / ((long long)g.oh * g.ow);
        const float* xp = x + p * g.h * g.w;
        y[i] = xp[edmips_argmax(xp, g, oy, ox)];
    }
}

// Output windows along one axis that contain input index i: [lo, hi).
__device__ __forceinline__ void edmips_covering(int i, int k, int s, int p, int out, int* lo, int* hi) {
    int t = i + p - k + 1;
    int l = t <= 0 ? 0 : (t + s - 1) / s;
    int h = (i + p) / s + 1;
    *lo = l;
    *hi = min(h, out);
}

extern "C" __global__ void maxpool_bwd(const float* __restrict__ x, const float* __restrict__ gy,
                                       float* __restrict__ dx, PoolArgs g) {
    long long total = g.planes * g.h * g.w;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ix = (int)(i % g.w);
        int iy = (int)((i / g.w) % g.h);
        long long p = i / ((long long)g.h * g.w);
        const float* xp = x + p * g.h * g.w;
        const float* gp = gy + p * g.oh * g.ow;
        int oy0, oy1, ox0, ox1;
        edmips_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy0, &oy1);
        edmips_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox0, &ox1);
        float acc = 0.0f;
        int me = iy * g.w + ix;
        for (int oy = oy0; oy < oy1; ++oy)
            for (int ox = ox0; ox < ox1; ++ox)
                if (edmips_argmax(xp, g, oy, ox) == me) acc = __fadd_rn(acc, gp[oy * g.ow + ox]);
        dx[i] = acc;
    }
}

__device__ __forceinline__ float edmips_divisor(const PoolArgs& g, int oy, int ox) {
    int y0, y1, x0, x1, ey, ex;
    edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &ey);
    edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &ex);
    return g.cip ? (float)(ey * ex) : (float)((y1 - y0) * (x1 - x0));
}

extern "C" __global__ void avgpool_fwd(const float* __restrict__ x, float* __restrict__ y, PoolArgs g) {
    long long total = g.planes * g.oh * g.ow;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ox = (int)(i % g.ow);
        int oy = (int)((i / g.ow) % g.oh);
        long long p = i / ((long long)g.oh * g.ow);
        const float* xp = x + p * g.h * g.w;
        int y0, y1, x0, x1, e;
        edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &e);
        edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &e);
        float acc = 0.0f;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) acc = __fadd_rn(acc, xp[iy * g.w + ix]);
        y[i] = __fdiv_rn(acc, edmips_divisor(g, oy, ox));
    }
}

extern "C" __global__ void avgpool_bwd(const float* __restrict__ gy, float* __restrict__ dx, PoolArgs g) {
    long long total = g.planes * g.h * g.w;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ix = (int)(i % g.w);
        int iy = (int)((i / g.w) % g.h);
        long long p = i / ((long long)g.h * g.w);
        const float* gp = gy + p * g.oh * g.ow;
        int oy0, oy1, ox0, ox1;
        edmips_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy0, &oy1);
        edmips_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox0, &ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; ++oy)
            for (int ox = ox0; ox < ox1; ++ox)
                acc = __fadd_rn(acc, __fdiv_rn(gp[oy * g.ow + ox], edmips_divisor(g, oy, ox)));
        dx[i] = acc;
    }
}
"#;

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
    use crate::ops::cuda::{grid, ptx_for, slice_f32, BLOCK};

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
        let cfg = LaunchConfig { grid_dim: (grid(n_out), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
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
