//! The integer forward of a quantized conv (decisions F18) with the built-in quantizers: the
//! grids their export forms describe hold their outputs, and the conv of two quantized tensors
//! is the exact convolution of the codes, with the f32 path's gradients.

use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::ops::conv::{conv2d, conv2d_on_grids};
use edmips::core::ops::integer_conv::{self, Grid};
use edmips::core::{registry, PluginSpec, QuantExport};
use edmips::Operand;

fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 * 0.7371 + seed as f32 * 1.913).sin() * 1.7 + (i % 5) as f32 * 0.11) * scale).collect()
}

fn grid_of(id: &str, operand: Operand, bits: u32, x: Option<&Tensor>, learned: &[Tensor]) -> Grid {
    let q = registry::build_quantizer(&PluginSpec::new(id)).unwrap();
    match q.export_form(operand, bits, x, learned).unwrap() {
        Some(QuantExport::Uniform(u)) => {
            Grid::of(&u).unwrap_or_else(|| panic!("{id} {bits} bits: no integer grid in {u:?}"))
        }
        other => panic!("{id} {bits} bits: not uniform: {other:?}"),
    }
}

fn quantize(id: &str, operand: Operand, bits: u32, x: &Tensor, learned: &[Tensor]) -> Vec<f32> {
    let q = registry::build_quantizer(&PluginSpec::new(id)).unwrap();
    q.quantize(x, operand, bits, learned).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// HWGQ activations at 1-4 bits and Gaussian weights at 1-4 bits (ties, the clip threshold and
/// beyond included): every output lies on the grid of the quantizer's export form.
#[test]
fn the_built_in_uniform_quantizers_outputs_lie_on_their_grids() {
    edmips::link_builtins();
    let dev = Device::Cpu;
    let xv: Vec<f32> = values(5000, 1, 1.5).into_iter().chain([0.0, -0.0, 0.269, 0.807, 1.614, 9.0, -3.0]).collect();
    let x = Tensor::from_vec(xv.clone(), xv.len(), &dev).unwrap();
    for bits in 1..=4 {
        let g = grid_of("hwgq", Operand::Activation, bits, None, &[]);
        assert_eq!((g.lo, g.hi), (0, (1 << bits) - 1), "hwgq {bits}");
        assert!(g.holds(&quantize("hwgq", Operand::Activation, bits, &x, &[])), "hwgq {bits} bits");
        let g = grid_of("gauss", Operand::Weight, bits, Some(&x), &[]);
        assert_eq!((g.lo, g.hi), (-(1 << bits) + 1, (1 << bits) - 1), "gauss {bits}: odd codes");
        assert!(g.holds(&quantize("gauss", Operand::Weight, bits, &x, &[])), "gauss {bits} bits");
        // And the check can fail: the unquantized tensor is not on the grid.
        assert!(!g.holds(&xv), "gauss {bits} bits, unquantized");
    }
}

/// `conv(HWGQ(x), Gauss(W))` through [`conv2d_on_grids`] against the exact convolution of the
/// codes (bitwise, where the processor runs the integer forward) and against the f32 path
/// (within f32 rounding); the gradients of both inputs are the f32 path's, bitwise.
#[test]
fn the_quantized_conv_is_the_exact_convolution_of_the_codes_with_the_f32_gradients() {
    edmips::link_builtins();
    let dev = Device::Cpu;
    let (n, c, h, w, o) = (2, 12, 10, 26, 16);
    for (abit, wbit, stride) in [(2, 2, 1), (4, 3, 1), (3, 1, 2)] {
        let x = Tensor::from_vec(values(n * c * h * w, 2, 1.0), (n, c, h, w), &dev).unwrap();
        let wt = Tensor::from_vec(values(o * c * 9, 3, 0.1), (o, c, 3, 3), &dev).unwrap();
        let xq = Var::from_vec(quantize("hwgq", Operand::Activation, abit, &x, &[]), (n, c, h, w), &dev).unwrap();
        let wq = Var::from_vec(quantize("gauss", Operand::Weight, wbit, &wt, &[]), (o, c, 3, 3), &dev).unwrap();
        let gx = grid_of("hwgq", Operand::Activation, abit, None, &[]);
        let gw = grid_of("gauss", Operand::Weight, wbit, Some(&wt), &[]);
        let pad = [1; 4];
        let fast = conv2d_on_grids(xq.as_tensor(), wq.as_tensor(), stride, pad, gx, gw).unwrap();
        let slow = conv2d(xq.as_tensor(), wq.as_tensor(), stride, pad).unwrap();
        let (fv, sv) = (
            fast.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            slow.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        // The exact convolution of the codes, rounded as the integer path's epilogue rounds.
        let codes =
            |v: Vec<f32>, g: &Grid| v.iter().map(|&e| (e / g.scale).round_ties_even() as i64).collect::<Vec<_>>();
        let (xc, wc) = (
            codes(xq.as_tensor().flatten_all().unwrap().to_vec1().unwrap(), &gx),
            codes(wq.as_tensor().flatten_all().unwrap().to_vec1().unwrap(), &gw),
        );
        let (oh, ow) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
        let scale = (gx.scale as f64 * gw.scale as f64) as f32;
        let mut exact = vec![0f32; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0i64;
                        for ci in 0..c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (iy, ix) = ((oy * stride + i) as isize - 1, (ox * stride + j) as isize - 1);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        s += xc[((b * c + ci) * h + iy as usize) * w + ix as usize]
                                            * wc[((oc * c + ci) * 3 + i) * 3 + j];
                                    }
                                }
                            }
                        }
                        exact[((b * o + oc) * oh + oy) * ow + ox] = s as f32 * scale;
                    }
                }
            }
        }
        let max_abs = sv.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (f, s)) in fv.iter().zip(&sv).enumerate() {
            assert!((f - s).abs() <= 1e-6 * max_abs, "a{abit} w{wbit}: element {i}: {f} vs f32 path {s}");
        }
        if integer_conv::available() {
            let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fv), bits(&exact), "a{abit} w{wbit}: the integer forward is exact");
        } else {
            eprintln!("no AVX-512 VNNI here: the f32 path ran, checked against it only");
        }
        let g = Tensor::from_vec(values(fv.len(), 4, 1.0), fast.shape(), &dev).unwrap();
        let gf = fast.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = slow.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&xq, &wq] {
            let a = gf.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = gs.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b, "a{abit} w{wbit}: gradients");
        }
    }
}
