//! 2-D average pooling with zero padding, `count_include_pad` and ceil mode, forward and
//! backward (PyTorch's `avg_pool2d`), as a candle custom op with a multi-threaded CPU kernel and
//! a CUDA kernel.
//!
//! The window sum is accumulated in f32 in scan order, then divided by the divisor: the window
//! clipped to the padded input when `count_include_pad` (Inception-V3, decision D17), else the
//! number of real input elements. See [`pool`](super::pool) for the shared geometry.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;
use super::pool::PoolGeom;
use crate::error::Result;
use crate::graph::PoolOpts;

/// Average pooling of an `[N, C, H, W]` tensor (computed in f32). Gradients flow to `x`.
pub fn avg_pool2d(x: &Tensor, opts: &PoolOpts) -> Result<Tensor> {
    let geom = PoolGeom::new(x, opts, "avg_pool2d")?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    Ok(x.apply_op1(AvgPool { geom })?)
}

struct AvgPool {
    geom: PoolGeom,
}

struct AvgPoolBwd {
    geom: PoolGeom,
    /// Input dims, for the output shape.
    in_dims: [usize; 4],
}

/// Window bounds `(y0, y1, x0, x1)` and divisor of output `(oy, ox)`.
#[inline]
fn window(g: &PoolGeom, oy: usize, ox: usize) -> (usize, usize, usize, usize, f32) {
    let (y0, y1, ey) = PoolGeom::window(oy, g.k.0, g.s.0, g.p.0, g.h);
    let (x0, x1, ex) = PoolGeom::window(ox, g.k.1, g.s.1, g.p.1, g.w);
    let div = if g.count_include_pad { ey * ex } else { (y1 - y0) * (x1 - x0) };
    (y0, y1, x0, x1, div as f32)
}

/// CPU forward over plain slices (`x`: `planes·H·W`, `out`: `planes·OH·OW`).
pub fn cpu_forward(g: &PoolGeom, x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(g.out_plane()).zip(x.par_chunks(g.in_plane())).for_each(|(o, xp)| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (y0, y1, x0, x1, div) = window(g, oy, ox);
                let mut acc = 0f32;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        acc += xp[iy * g.w + ix];
                    }
                }
                o[oy * g.ow + ox] = acc / div;
            }
        }
    });
}

/// CPU backward over plain slices: `dx` (zeroed by the caller) from the output gradient `gy`.
pub fn cpu_backward(g: &PoolGeom, gy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(g.in_plane()).zip(gy.par_chunks(g.out_plane())).for_each(|(d, gp)| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (y0, y1, x0, x1, div) = window(g, oy, ox);
                let v = gp[oy * g.ow + ox] / div;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        d[iy * g.w + ix] += v;
                    }
                }
            }
        }
    });
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "edmips-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "avg_pool2d")?;
        let mut out = vec![0f32; self.geom.planes * self.geom.out_plane()];
        cpu_forward(&self.geom, x, &mut out);
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], self.geom.oh, self.geom.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geom;
        let d = l.dims();
        let shape = Shape::from((d[0], d[1], g.oh, g.ow));
        super::pool::cuda::launch("avgpool_fwd", g, &[(s, l)], g.planes * g.out_plane(), shape)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let g = grad_res.contiguous()?;
        Ok(Some(g.apply_op1_no_bwd(&AvgPoolBwd { geom: self.geom, in_dims: [n, c, h, w] })?))
    }
}

impl CustomOp1 for AvgPoolBwd {
    fn name(&self) -> &'static str {
        "edmips-avg-pool2d-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let gy = cpu_slice(s, l, "avg_pool2d backward")?;
        let mut dx = vec![0f32; self.geom.planes * self.geom.in_plane()];
        cpu_backward(&self.geom, gy, &mut dx);
        Ok((CpuStorage::F32(dx), Shape::from(self.in_dims.to_vec())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.geom;
        super::pool::cuda::launch(
            "avgpool_bwd",
            g,
            &[(s, l)],
            g.planes * g.in_plane(),
            Shape::from(self.in_dims.to_vec()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::det_fill;
    use candle_core::{Device, Var};

    /// Direct f64 reference: output, and per output the (input index, weight) pairs.
    #[allow(clippy::type_complexity)]
    fn reference(x: &[f32], dims: [usize; 4], o: &PoolOpts) -> (Vec<f64>, Vec<Vec<(usize, f64)>>, [usize; 4]) {
        let [n, c, h, w] = dims;
        let oh = PoolOpts::out_size(h, o.kernel.0, o.stride.0, o.padding.0, o.ceil_mode).unwrap();
        let ow = PoolOpts::out_size(w, o.kernel.1, o.stride.1, o.padding.1, o.ceil_mode).unwrap();
        let (mut out, mut taps) = (vec![], vec![]);
        for p in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut inside, mut padded, mut members) = (0usize, 0usize, vec![]);
                    for i in 0..o.kernel.0 {
                        for j in 0..o.kernel.1 {
                            let iy = (oy * o.stride.0 + i) as isize - o.padding.0 as isize;
                            let ix = (ox * o.stride.1 + j) as isize - o.padding.1 as isize;
                            // Positions inside the padded input count with count_include_pad.
                            let in_padded = iy < (h + o.padding.0) as isize && ix < (w + o.padding.1) as isize;
                            if in_padded {
                                padded += 1;
                            }
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                inside += 1;
                                members.push(p * h * w + iy as usize * w + ix as usize);
                            }
                        }
                    }
                    let div = if o.count_include_pad { padded } else { inside } as f64;
                    out.push(members.iter().map(|&e| x[e] as f64).sum::<f64>() / div);
                    taps.push(members.into_iter().map(|e| (e, 1.0 / div)).collect());
                }
            }
        }
        (out, taps, [n, c, oh, ow])
    }

    #[test]
    fn forward_and_backward_match_a_direct_reference() {
        let dev = Device::Cpu;
        let mut cases = vec![
            PoolOpts::new(3, 1, 1),        // Inception pool branch (count_include_pad)
            PoolOpts::new(7, 7, 0),        // ResNet head
            PoolOpts::new(3, 2, 1).ceil(), // ceil mode with padding
            PoolOpts::new(2, 2, 1).ceil(),
            PoolOpts { kernel: (3, 2), stride: (2, 1), padding: (1, 1), ceil_mode: false, count_include_pad: true },
        ];
        let excl: Vec<PoolOpts> = cases.iter().map(|o| PoolOpts { count_include_pad: false, ..*o }).collect();
        cases.extend(excl);
        for (ci, o) in cases.iter().enumerate() {
            for dims in [[2usize, 3, 7, 7], [1, 2, 9, 8]] {
                let xv = det_fill(dims.iter().product(), 20 + ci as u64, 1.0);
                let x = Var::from_vec(xv.clone(), dims.to_vec(), &dev).unwrap();
                let y = avg_pool2d(x.as_tensor(), o).unwrap();
                let (r, taps, rd) = reference(&xv, dims, o);
                assert_eq!(y.dims(), rd.as_slice(), "{o:?} {dims:?}");
                let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (a, b) in yv.iter().zip(&r) {
                    assert!((*a as f64 - b).abs() < 1e-6, "{o:?} {dims:?}: y {a} vs {b}");
                }
                let gv = det_fill(yv.len(), 98, 1.0);
                let g = Tensor::from_vec(gv.clone(), y.shape(), &dev).unwrap();
                let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                let dx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut want = vec![0f64; xv.len()];
                for (k, t) in taps.iter().enumerate() {
                    for &(e, wgt) in t {
                        want[e] += gv[k] as f64 * wgt;
                    }
                }
                for (a, b) in dx.iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-6, "{o:?} {dims:?}: dx {a} vs {b}");
                }
            }
        }
    }
}
