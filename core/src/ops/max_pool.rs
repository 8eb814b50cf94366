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
    /// ([`window_offset`]), for the backward: it scatters instead of searching each window
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

/// The plane index of window `(oy, ox)`'s offset `off` ([`offset_in_window`]'s inverse).
#[inline]
fn window_offset(g: &PoolGeom, oy: usize, ox: usize, off: u8) -> usize {
    let (y0, x0) = window_start(g, oy, ox);
    (y0 + off as usize / g.k.1) * g.w + x0 + off as usize % g.k.1
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

/// [`cpu_forward`] that also records each window's argmax as its offset in the window
/// (`offsets`: `planes·OH·OW`; needs [`offsets_fit`]).
fn cpu_forward_with_offsets(g: &PoolGeom, x: &[f32], out: &mut [f32], offsets: &mut [u8]) {
    let op = g.out_plane();
    out.par_chunks_mut(op).zip(offsets.par_chunks_mut(op)).zip(x.par_chunks(g.in_plane())).for_each(
        |((o, offs), xp)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let at = argmax(xp, g, oy, ox);
                    o[oy * g.ow + ox] = xp[at];
                    offs[oy * g.ow + ox] = offset_in_window(g, oy, ox, at);
                }
            }
        },
    );
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
/// same sums in the same order, so bitwise the same `dx`.
fn cpu_backward_from_offsets(g: &PoolGeom, offsets: &[u8], gy: &[f32], dx: &mut [f32]) {
    let op = g.out_plane();
    dx.par_chunks_mut(g.in_plane()).zip(offsets.par_chunks(op)).zip(gy.par_chunks(op)).for_each(|((d, offs), gp)| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                d[window_offset(g, oy, ox, offs[oy * g.ow + ox])] += gp[oy * g.ow + ox];
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

    /// The recorded-offset forward and scatter backward against the search versions they
    /// replace, bitwise, with ties and NaNs in the input.
    #[test]
    fn recorded_offsets_match_the_searching_kernels() {
        for o in [PoolOpts::new(3, 2, 1), PoolOpts::new(3, 2, 0).ceil(), PoolOpts::new(2, 2, 0), PoolOpts::new(3, 1, 1)]
        {
            let dims = [2usize, 3, 9, 11];
            let mut xv: Vec<f32> = det_fill(dims.iter().product(), 21, 1.0).iter().map(|v| (v * 4.0).round()).collect();
            xv[5] = f32::NAN;
            xv[40] = f32::NAN;
            xv[41] = f32::NAN;
            let x = Tensor::from_vec(xv.clone(), dims.to_vec(), &Device::Cpu).unwrap();
            let g = PoolGeom::new(&x, &o, "test").unwrap();
            let mut want = vec![0f32; g.planes * g.out_plane()];
            cpu_forward(&g, &xv, &mut want);
            let (mut got, mut offs) = (vec![0f32; want.len()], vec![0u8; want.len()]);
            cpu_forward_with_offsets(&g, &xv, &mut got, &mut offs);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let gy = det_fill(want.len(), 22, 1.0);
            let (mut dx_search, mut dx_scatter) = (vec![0f32; xv.len()], vec![0f32; xv.len()]);
            cpu_backward(&g, &xv, &gy, &mut dx_search);
            cpu_backward_from_offsets(&g, &offs, &gy, &mut dx_scatter);
            assert_eq!(dx_search, dx_scatter, "{o:?}");
        }
    }

    #[test]
    fn a_too_small_input_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, &PoolOpts::new(3, 2, 0)).is_err());
    }
}
