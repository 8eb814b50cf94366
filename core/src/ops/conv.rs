//! 2-D convolution with per-side zero padding (candle's `conv2d` pads symmetrically only). On
//! CPU it runs our own im2col + GEMM op ([`super::conv_cpu`]); elsewhere candle's convolution.

use candle_core::Tensor;

use super::integer_conv::Grid;
use crate::error::Result;

/// `conv2d(x, w)` with stride `stride` and zero padding `[top, bottom, left, right]`, no bias.
///
/// Symmetric padding goes straight to candle's convolution; asymmetric padding (Inception's
/// 1×7 / 7×1 kernels) pads the input explicitly first. Gradients flow to `x` and `w`.
///
/// candle 0.11's conv2d backward sizes the input gradient with an output padding computed from
/// the height alone, which is wrong when the two axes leave different remainders
/// `(padded - kernel) % stride` (a non-square input or kernel with stride > 1). Then the input
/// is padded explicitly and the trailing rows/columns that no window reads are cropped, which
/// changes no output and makes both remainders zero.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Result<Tensor> {
    if on_cpu_f32(x, w) {
        return super::conv_cpu::conv2d_cpu(x, w, stride, pad);
    }
    conv2d_candle(x, w, stride, pad)
}

/// [`conv2d`] of an input on the integer grid `gx` and a kernel on `gw` (a quantized conv in
/// retraining): on CPU the forward may be the exact integer product of
/// [`integer_conv`](super::integer_conv) (decisions F18); elsewhere, and wherever that declines,
/// it is [`conv2d`]. Gradients are [`conv2d`]'s.
pub fn conv2d_on_grids(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4], gx: Grid, gw: Grid) -> Result<Tensor> {
    if on_cpu_f32(x, w) {
        return super::conv_cpu::conv2d_cpu_on_grids(x, w, stride, pad, gx, gw);
    }
    conv2d(x, w, stride, pad)
}

/// Whether both operands are f32 on the CPU: what our own CPU convolution takes.
fn on_cpu_f32(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && w.dtype() == candle_core::DType::F32
}

/// [`conv2d`] through candle's convolution on any device, with the padding and backward
/// workaround described there (the path CUDA takes; tested on the CPU as well).
pub fn conv2d_candle(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Result<Tensor> {
    let [t, b, l, r] = pad;
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let rem = |size: usize, k: usize| (size.saturating_sub(k)) % stride.max(1);
    let (rh, rw) = (rem(h + t + b, kh), rem(wd + l + r, kw));
    if t == b && b == l && l == r && rh == rw {
        return Ok(x.conv2d(w, t, stride, 1, 1)?);
    }
    let x = if t + b > 0 { x.pad_with_zeros(2, t, b)? } else { x.clone() };
    let x = if l + r > 0 { x.pad_with_zeros(3, l, r)? } else { x };
    let (hp, wp) = (h + t + b, wd + l + r);
    let x = if rh > 0 { x.narrow(2, 0, hp - rh)? } else { x };
    let x = if rw > 0 { x.narrow(3, 0, wp - rw)? } else { x };
    Ok(x.conv2d(w, 0, stride, 1, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Direct f64 convolution for reference.
    fn reference(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        stride: usize,
        pad: [usize; 4],
    ) -> (Vec<f64>, [usize; 4]) {
        let [n, c, h, wd] = xs;
        let [o, _, kh, kw] = ws;
        let oh = (h + pad[0] + pad[1] - kh) / stride + 1;
        let ow = (wd + pad[2] + pad[3] - kw) / stride + 1;
        let mut out = vec![0f64; n * o * oh * ow];
        for ni in 0..n {
            for oi in 0..o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = 0f64;
                        for ci in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * stride + i) as isize - pad[0] as isize;
                                    let ix = (xx * stride + j) as isize - pad[2] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                        s += x[((ni * c + ci) * h + iy as usize) * wd + ix as usize] as f64
                                            * w[((oi * c + ci) * kh + i) * kw + j] as f64;
                                    }
                                }
                            }
                        }
                        out[((ni * o + oi) * oh + y) * ow + xx] = s;
                    }
                }
            }
        }
        (out, [n, o, oh, ow])
    }

    /// The candle path (what CUDA runs) on the CPU, where the unequal-remainder workaround
    /// applies: a non-square input with stride 2 (`(9+2-3) % 2 = 0` rows, `(8+2-3) % 2 = 1`
    /// column), asymmetric padding, and a 1x7 kernel. Values and both gradients against the f64
    /// direct convolution (dx by central finite differences of `sum(y · g)`).
    #[test]
    fn candle_path_with_the_backward_workaround_matches_direct_convolution() {
        let dev = Device::Cpu;
        for (xs, ws, pad, stride) in [
            ([2, 2, 9, 8], [3, 2, 3, 3], [1, 1, 1, 1], 2),
            ([1, 2, 7, 10], [2, 2, 1, 7], [0, 0, 3, 3], 2),
            ([1, 1, 6, 5], [2, 1, 3, 2], [1, 0, 0, 1], 1),
        ] {
            let xv = crate::init::det_fill(xs.iter().product(), 3, 1.0);
            let wv = crate::init::det_fill(ws.iter().product(), 4, 0.5);
            let x = Var::from_vec(xv.clone(), xs.to_vec(), &dev).unwrap();
            let w = Var::from_vec(wv.clone(), ws.to_vec(), &dev).unwrap();
            let y = conv2d_candle(x.as_tensor(), w.as_tensor(), stride, pad).unwrap();
            let (r, rs) = reference(&xv, xs, &wv, ws, stride, pad);
            assert_eq!(y.dims(), rs.as_slice(), "{xs:?} {ws:?}");
            let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in yv.iter().zip(&r) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b} for {xs:?} {ws:?}");
            }
            let gv = crate::init::det_fill(r.len(), 5, 1.0);
            let g = Tensor::from_vec(gv.clone(), rs.to_vec(), &dev).unwrap();
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gw = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(gx.len(), xv.len(), "dx has the input's shape");
            let obj = |xv: &[f32], wv: &[f32]| -> f64 {
                reference(xv, xs, wv, ws, stride, pad).0.iter().zip(&gv).map(|(a, b)| a * *b as f64).sum()
            };
            let eps = 1e-2f32;
            for i in 0..xv.len() {
                let (mut p, mut m) = (xv.clone(), xv.clone());
                p[i] += eps;
                m[i] -= eps;
                let fd = (obj(&p, &wv) - obj(&m, &wv)) / (2.0 * eps as f64);
                assert!((gx[i] as f64 - fd).abs() < 1e-3, "dx[{i}] {} vs fd {fd} for {xs:?} {ws:?}", gx[i]);
            }
            for i in 0..wv.len() {
                let (mut p, mut m) = (wv.clone(), wv.clone());
                p[i] += eps;
                m[i] -= eps;
                let fd = (obj(&xv, &p) - obj(&xv, &m)) / (2.0 * eps as f64);
                assert!((gw[i] as f64 - fd).abs() < 1e-3, "dW[{i}] {} vs fd {fd} for {xs:?} {ws:?}", gw[i]);
            }
        }
    }

    #[test]
    fn rectangular_kernels_with_asymmetric_padding_match_direct_convolution() {
        let dev = Device::Cpu;
        for (ws, pad, stride) in [
            ([3, 2, 1, 7], [0, 0, 3, 3], 1),
            ([3, 2, 7, 1], [3, 3, 0, 0], 1),
            ([4, 2, 3, 3], [1, 1, 1, 1], 2),
            ([2, 2, 1, 3], [0, 0, 1, 1], 1),
        ] {
            let xs = [2, 2, 9, 8];
            let xv = crate::init::det_fill(xs.iter().product(), 1, 1.0);
            let wv = crate::init::det_fill(ws.iter().product(), 2, 0.5);
            let x = Var::from_vec(xv.clone(), xs.to_vec(), &dev).unwrap();
            let w = Var::from_vec(wv.clone(), ws.to_vec(), &dev).unwrap();
            let y = conv2d(x.as_tensor(), w.as_tensor(), stride, pad).unwrap();
            let (r, rs) = reference(&xv, xs, &wv, ws, stride, pad);
            assert_eq!(y.dims(), rs.as_slice());
            let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in yv.iter().zip(&r) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b} for {ws:?}");
            }
            // Gradient of sum(y) w.r.t. w[o,c,i,j] = sum of the inputs it touches: check one entry by FD in f64.
            let grads = y.sum_all().unwrap().backward().unwrap();
            let gw = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eps = 1e-3;
            let mut wp = wv.clone();
            wp[0] += eps;
            let (rp, _) = reference(&xv, xs, &wp, ws, stride, pad);
            let fd = (rp.iter().sum::<f64>() - r.iter().sum::<f64>()) / eps as f64;
            assert!((gw[0] as f64 - fd).abs() < 1e-2, "dW {} vs fd {fd}", gw[0]);
        }
    }
}
