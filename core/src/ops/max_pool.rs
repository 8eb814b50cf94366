//! 2-D max pooling with -inf padding and ceil mode, forward and backward (PyTorch's
//! `max_pool2d`), as a candle custom op with a multi-threaded CPU kernel and a CUDA kernel.
//!
//! The gradient of each output goes to the first maximum of its window in scan order (NaN
//! wins), as in PyTorch. See [`pool`](super::pool) for the shared geometry. The CPU forward
//! records each window's argmax (a byte: its offset in the window), so the CPU backward is a
//! scatter rather than a second search (the search was half of max pooling's share of a
//! ResNet-18 step).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

use super::cpu_slice;
use super::pool::PoolGeom;
use crate::error::Result;
use crate::graph::PoolOpts;

/// Max pooling of an `[N, C, H, W]` tensor (computed in f32). Gradients flow to `x`.
pub fn max_pool2d(x: &Tensor, opts: &PoolOpts) -> Result<Tensor> {
    let geom = PoolGeom::new(x, opts, "max_pool2d")?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    Ok(x.apply_op1(MaxPool { geom, argmax: OnceLock::new() })?)
}

struct MaxPool {
    geom: PoolGeom,
    /// The CPU forward's argmax of every window, as its offset inside the window
    /// ([`offset_in_window`]), for the backward: it scatters instead of searching each window
    /// again. One byte per output; empty until a CPU forward ran.
    argmax: OnceLock<Arc<Vec<u8>>>,
}

struct MaxPoolBwd {
    geom: PoolGeom,
    /// The forward's window offsets, when the forward ran on the CPU.
    argmax: Option<Arc<Vec<u8>>>,
}

/// `(y0, x0)`: the first input row and column that window `(oy, ox)` reads.
#[inline]
fn window_start(g: &PoolGeom, oy: usize, ox: usize) -> (usize, usize) {
    (PoolGeom::window(oy, g.k.0, g.s.0, g.p.0, g.h).0, PoolGeom::window(ox, g.k.1, g.s.1, g.p.1, g.w).0)
}

/// Window `(oy, ox)`'s offset `(iy - y0) · kw + (ix - x0)` of the plane index `at` it read.
#[inline]
fn offset_in_window(g: &PoolGeom, oy: usize, ox: usize, at: usize) -> u8 {
    let (y0, x0) = window_start(g, oy, ox);
    ((at / g.w - y0) * g.k.1 + at % g.w - x0) as u8
}

/// Index (within the plane) of the first maximum of window `(oy, ox)`.
#[inline]
fn argmax(xp: &[f32], g: &PoolGeom, oy: usize, ox: usize) -> usize {
    let (y0, y1, _) = PoolGeom::window(oy, g.k.0, g.s.0, g.p.0, g.h);
    let (x0, x1, _) = PoolGeom::window(ox, g.k.1, g.s.1, g.p.1, g.w);
    let mut best = f32::NEG_INFINITY;
    let mut idx = y0 * g.w + x0;
    for iy in y0..y1 {
        for ix in x0..x1 {
            let v = xp[iy * g.w + ix];
            if v > best || v.is_nan() {
                best = v;
                idx = iy * g.w + ix;
            }
        }
    }
    idx
}

/// Whether window offsets fit in a byte (windows of at most 256 elements); larger windows
/// search again in the backward.
fn offsets_fit(g: &PoolGeom) -> bool {
    g.k.0 * g.k.1 <= 256
}

/// CPU forward over plain slices (`x`: `planes·H·W`, `out`: `planes·OH·OW`).
pub fn cpu_forward(g: &PoolGeom, x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(g.out_plane()).zip(x.par_chunks(g.in_plane())).for_each(|(o, xp)| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                o[oy * g.ow + ox] = xp[argmax(xp, g, oy, ox)];
            }
        }
    });
}

/// Output columns the vectorised forward takes at once ([`interior_row`]).
const ROW_LANES: usize = 16;

/// The output columns `[lo, hi)` whose windows lie wholly inside the row: `ox·s - p ≥ 0` and
/// `ox·s - p + k ≤ w`. Only the columns outside it meet the padding.
fn interior_cols(g: &PoolGeom) -> (usize, usize) {
    let (k, s, p) = (g.k.1, g.s.1, g.p.1);
    let lo = p.div_ceil(s);
    let hi = if g.w + p >= k { ((g.w + p - k) / s + 1).min(g.ow) } else { 0 };
    (lo.min(hi), hi)
}

/// [`cpu_forward`] that also records each window's argmax as its offset in the window
/// (`offsets`: `planes·OH·OW`; windows of at most 256 elements). The columns whose windows lie
/// inside the row run sixteen at a time without a branch per element (`interior_row`); the
/// edge columns search as [`cpu_forward`] does. Both take the first maximum in scan order (NaN
/// wins), so values and offsets are [`cpu_forward`]'s. Public for benchmarks.
///
/// # Panics
/// If a window holds more than 256 elements (its offsets would not fit in a byte).
pub fn cpu_forward_with_offsets(g: &PoolGeom, x: &[f32], out: &mut [f32], offsets: &mut [u8]) {
    assert!(offsets_fit(g), "max_pool2d: a {}x{} window's offsets do not fit in a byte", g.k.0, g.k.1);
    let op = g.out_plane();
    let (lo, hi) = interior_cols(g);
    out.par_chunks_mut(op).zip(offsets.par_chunks_mut(op)).zip(x.par_chunks(g.in_plane())).for_each(
        |((o, offs), xp)| {
            for oy in 0..g.oh {
                let (o, offs) = (&mut o[oy * g.ow..(oy + 1) * g.ow], &mut offs[oy * g.ow..(oy + 1) * g.ow]);
                for ox in (0..lo).chain(hi..g.ow) {
                    let at = argmax(xp, g, oy, ox);
                    o[ox] = xp[at];
                    offs[ox] = offset_in_window(g, oy, ox, at);
                }
                if lo < hi {
                    interior_row_dispatch(g, xp, oy, lo, &mut o[lo..hi], &mut offs[lo..hi]);
                }
            }
        },
    );
}

/// [`interior_row`] compiled for AVX2 where the processor has it (the same comparisons and
/// selections, only wider), else portable.
fn interior_row_dispatch(g: &PoolGeom, xp: &[f32], oy: usize, lo: usize, o: &mut [f32], offs: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: checked just above that the processor has AVX2.
        unsafe { interior_row_avx2(g, xp, oy, lo, o, offs) };
        return;
    }
    interior_row(g, xp, oy, lo, o, offs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn interior_row_avx2(g: &PoolGeom, xp: &[f32], oy: usize, lo: usize, o: &mut [f32], offs: &mut [u8]) {
    interior_row(g, xp, oy, lo, o, offs)
}

/// The max and first-argmax offsets of output row `oy`'s windows at columns `lo..lo + o.len()`,
/// all inside the row ([`interior_cols`]): [`ROW_LANES`] windows at a time, each window element
/// in scan order compared in every lane at once (`v > best || v is NaN` takes it, as
/// [`argmax`] does). The output is the value taken (`-inf` where every element is `-inf`,
/// which is then the first element's value, offset 0).
#[inline(always)]
fn interior_row(g: &PoolGeom, xp: &[f32], oy: usize, lo: usize, o: &mut [f32], offs: &mut [u8]) {
    let (y0, y1, _) = PoolGeom::window(oy, g.k.0, g.s.0, g.p.0, g.h);
    let (kw, s, p) = (g.k.1, g.s.1, g.p.1);
    for (b, (ob, fb)) in o.chunks_mut(ROW_LANES).zip(offs.chunks_mut(ROW_LANES)).enumerate() {
        let first = (lo + b * ROW_LANES) * s - p;
        let mut best = [f32::NEG_INFINITY; ROW_LANES];
        // Offsets as f32 (exact below 2^24): one lane width with `best`, so the selections
        // share the comparison's mask.
        let mut off = [0f32; ROW_LANES];
        let mut v = [0f32; ROW_LANES];
        for iy in y0..y1 {
            let row = &xp[iy * g.w..(iy + 1) * g.w];
            for dx in 0..kw {
                let code = ((iy - y0) * kw + dx) as f32;
                for (vl, &e) in v.iter_mut().zip(row[first + dx..].iter().step_by(s)) {
                    *vl = e;
                }
                for l in 0..ROW_LANES {
                    let take = v[l] > best[l] || v[l].is_nan();
                    best[l] = if take { v[l] } else { best[l] };
                    off[l] = if take { code } else { off[l] };
                }
            }
        }
        for (l, (oe, fe)) in ob.iter_mut().zip(fb.iter_mut()).enumerate() {
            *oe = best[l];
            *fe = off[l] as u8;
        }
    }
}

/// CPU backward over plain slices: `dx` (zeroed by the caller) from the output gradient `gy`.
pub fn cpu_backward(g: &PoolGeom, x: &[f32], gy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(g.in_plane()).zip(x.par_chunks(g.in_plane())).zip(gy.par_chunks(g.out_plane())).for_each(
        |((d, xp), gp)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    d[argmax(xp, g, oy, ox)] += gp[oy * g.ow + ox];
                }
            }
        },
    );
}

/// [`cpu_backward`] from the forward's recorded window offsets: a scatter, no search. The
/// same sums in the same order, so bitwise the same `dx`. Each window's first element and
/// each offset's distance from it in the plane are computed once (a table), not per output.
/// Public for benchmarks.
pub fn cpu_backward_from_offsets(g: &PoolGeom, offsets: &[u8], gy: &[f32], dx: &mut [f32]) {
    let op = g.out_plane();
    let delta: Vec<usize> = (0..g.k.0 * g.k.1).map(|off| off / g.k.1 * g.w + off % g.k.1).collect();
    let x0: Vec<usize> = (0..g.ow).map(|ox| window_start(g, 0, ox).1).collect();
    dx.par_chunks_mut(g.in_plane()).zip(offsets.par_chunks(op)).zip(gy.par_chunks(op)).for_each(|((d, offs), gp)| {
        for oy in 0..g.oh {
            let row = window_start(g, oy, 0).0 * g.w;
            let (offs, gp) = (&offs[oy * g.ow..(oy + 1) * g.ow], &gp[oy * g.ow..(oy + 1) * g.ow]);
            for ((&f, &gv), &x0) in offs.iter().zip(gp).zip(&x0) {
                d[row + x0 + delta[f as usize]] += gv;
            }
        }
    });
}

fn out_shape(g: &PoolGeom, l: &Layout) -> Shape {
    let d = l.dims();
    Shape::from((d[0], d[1], g.oh, g.ow))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "edmips-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "max_pool2d")?;
        let g = &self.geom;
        let mut out = vec![0f32; g.planes * g.out_plane()];
        if offsets_fit(g) {
            let mut offsets = vec![0u8; out.len()];
            cpu_forward_with_offsets(g, x, &mut out, &mut offsets);
            // A second forward of the same op (none today) would find the same offsets.
            let _ = self.argmax.set(Arc::new(offsets));
        } else {
            cpu_forward(g, x, &mut out);
        }
        Ok((CpuStorage::F32(out), out_shape(g, l)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geom;
        super::pool::cuda::launch("maxpool_fwd", g, &[(s, l)], g.planes * g.out_plane(), out_shape(g, l))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        let argmax = self.argmax.get().cloned();
        Ok(Some(arg.apply_op2_no_bwd(&g, &MaxPoolBwd { geom: self.geom, argmax })?))
    }
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "edmips-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "max_pool2d backward")?;
        let gy = cpu_slice(s2, l2, "max_pool2d backward")?;
        let mut dx = vec![0f32; x.len()];
        match &self.argmax {
            Some(offsets) if offsets.len() == gy.len() => cpu_backward_from_offsets(&self.geom, offsets, gy, &mut dx),
            _ => cpu_backward(&self.geom, x, gy, &mut dx),
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geom;
        super::pool::cuda::launch("maxpool_bwd", g, &[(s1, l1), (s2, l2)], g.planes * g.in_plane(), l1.shape().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use candle_core::{Device, Var};

    /// Direct f64 reference: output and the index of the (first) max per window.
    fn reference(x: &[f32], dims: [usize; 4], o: &PoolOpts) -> (Vec<f64>, Vec<usize>, [usize; 4]) {
        let [n, c, h, w] = dims;
        let oh = PoolOpts::out_size(h, o.kernel.0, o.stride.0, o.padding.0, o.ceil_mode).unwrap();
        let ow = PoolOpts::out_size(w, o.kernel.1, o.stride.1, o.padding.1, o.ceil_mode).unwrap();
        let (mut out, mut arg) = (vec![], vec![]);
        for p in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = f64::NEG_INFINITY;
                    let mut at = usize::MAX;
                    for i in 0..o.kernel.0 {
                        for j in 0..o.kernel.1 {
                            let iy = (oy * o.stride.0 + i) as isize - o.padding.0 as isize;
                            let ix = (ox * o.stride.1 + j) as isize - o.padding.1 as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue; // -inf padding
                            }
                            let e = p * h * w + iy as usize * w + ix as usize;
                            if x[e] as f64 > best {
                                best = x[e] as f64;
                                at = e;
                            }
                        }
                    }
                    out.push(best);
                    arg.push(at);
                }
            }
        }
        (out, arg, [n, c, oh, ow])
    }

    #[test]
    fn forward_and_backward_match_a_direct_reference() {
        let dev = Device::Cpu;
        let cases = [
            PoolOpts::new(3, 2, 1),        // ResNet stem
            PoolOpts::new(3, 2, 0).ceil(), // GoogLeNet
            PoolOpts::new(2, 2, 0).ceil(),
            PoolOpts::new(3, 1, 1).ceil(), // GoogLeNet pool branch
            PoolOpts::new(3, 2, 0),        // Inception
            PoolOpts { kernel: (3, 2), stride: (2, 1), padding: (1, 0), ceil_mode: true, count_include_pad: true },
        ];
        for (ci, o) in cases.iter().enumerate() {
            for dims in [[2usize, 3, 7, 7], [1, 2, 8, 5], [1, 1, 14, 14]] {
                let xv = det_fill(dims.iter().product(), 10 + ci as u64, 1.0);
                let x = Var::from_vec(xv.clone(), dims.to_vec(), &dev).unwrap();
                let y = max_pool2d(x.as_tensor(), o).unwrap();
                let (r, arg, rd) = reference(&xv, dims, o);
                assert_eq!(y.dims(), rd.as_slice(), "{o:?} {dims:?}");
                let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(yv.iter().map(|&v| v as f64).collect::<Vec<_>>(), r, "{o:?} {dims:?}");
                // Backward with a non-uniform upstream gradient.
                let gv = det_fill(yv.len(), 99, 1.0);
                let g = Tensor::from_vec(gv.clone(), y.shape(), &dev).unwrap();
                let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                let dx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut want = vec![0f64; xv.len()];
                for (k, &a) in arg.iter().enumerate() {
                    want[a] += gv[k] as f64;
                }
                for (a, b) in dx.iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-6, "{o:?} {dims:?}: dx {a} vs {b}");
                }
            }
        }
    }

    /// The recorded-offset forward (vectorised inside the rows, searching at the edges) and the
    /// scatter backward against the search versions they replace, bitwise: values, every
    /// window's offset, and `dx`; with ties, signed zeros, NaNs and all `-inf` windows in the
    /// input, rows narrower and wider than a lane group, strides 1 to 3.
    #[test]
    fn recorded_offsets_match_the_searching_kernels() {
        let rect =
            PoolOpts { kernel: (3, 2), stride: (2, 1), padding: (1, 0), ceil_mode: true, count_include_pad: true };
        let opts = [
            PoolOpts::new(3, 2, 1),
            PoolOpts::new(3, 2, 0).ceil(),
            PoolOpts::new(2, 2, 0),
            PoolOpts::new(3, 1, 1),
            PoolOpts::new(3, 3, 1).ceil(),
            rect,
        ];
        for o in opts {
            for dims in [[2usize, 3, 9, 11], [1, 2, 13, 70], [1, 1, 6, 37]] {
                let n: usize = dims.iter().product();
                let mut xv: Vec<f32> = det_fill(n, 21, 1.0).iter().map(|v| (v * 4.0).round()).collect();
                for i in (5..n).step_by(53) {
                    xv[i] = f32::NAN;
                }
                for i in (7..n).step_by(29) {
                    xv[i] = -0.0;
                }
                // A patch of -inf as wide as a window and more, so some windows hold nothing else.
                for i in 0..4 {
                    for j in 20..27 {
                        if let Some(v) = xv.get_mut(i * dims[3] + j) {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
                let x = Tensor::from_vec(xv.clone(), dims.to_vec(), &Device::Cpu).unwrap();
                let g = PoolGeom::new(&x, &o, "test").unwrap();
                let mut want = vec![0f32; g.planes * g.out_plane()];
                cpu_forward(&g, &xv, &mut want);
                let mut want_offs = vec![0u8; want.len()];
                for (pl, offs) in want_offs.chunks_mut(g.out_plane()).enumerate() {
                    let xp = &xv[pl * g.in_plane()..(pl + 1) * g.in_plane()];
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            offs[oy * g.ow + ox] = offset_in_window(&g, oy, ox, argmax(xp, &g, oy, ox));
                        }
                    }
                }
                let (mut got, mut offs) = (vec![0f32; want.len()], vec![0u8; want.len()]);
                cpu_forward_with_offsets(&g, &xv, &mut got, &mut offs);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{o:?} {dims:?}"
                );
                assert_eq!(offs, want_offs, "{o:?} {dims:?}");
                let gy = det_fill(want.len(), 22, 1.0);
                let (mut dx_search, mut dx_scatter) = (vec![0f32; xv.len()], vec![0f32; xv.len()]);
                cpu_backward(&g, &xv, &gy, &mut dx_search);
                cpu_backward_from_offsets(&g, &offs, &gy, &mut dx_scatter);
                assert_eq!(dx_search, dx_scatter, "{o:?} {dims:?}");
            }
        }
    }

    #[test]
    fn a_too_small_input_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, &PoolOpts::new(3, 2, 0)).is_err());
    }
}
