//! 2-D convolution, forward + backward (dx and dW) on the CPU: our op (`ops::conv::conv2d`:
//! Winograd F(2×2, 3×3) for the 3×3 stride-1 layers where it pays, im2col + GEMM with the
//! orientations of decisions F10 otherwise, small planes with many channels batched over the
//! samples; decisions F12, F16), the paths forced (`ours-im2col`, `ours-winograd`, and
//! `ours-im2col-per-sample` where the batched products apply: the path they replace) and
//! candle's convolution (`ops::conv::conv2d_candle`, the path ours replaces
//! on the CPU), at ResNet-20 stage shapes (batch 128, 32×32 / 16×16 / 8×8), the ResNet-18 stage
//! shapes (batch 8, 56×56 / 28×28 / 14×14 / 7×7) and a 1×1 stride-1 convolution (the
//! im2col-free case). The allocator is tuned as the command line tunes it
//! (`engine::memory::tune_allocator`), so large buffers are not returned to the system and
//! faulted in again every iteration.
//!
//! Group `quantized_conv2d_fwd`: the forward of a retraining conv whose operands lie on
//! integer grids (2-bit HWGQ activation levels, 2-bit Gaussian weight levels), as the integer
//! product (`integer`: `ops::conv::conv2d_on_grids`, AVX-512 VNNI, decisions F18) and as the f32
//! path it replaces (`f32`: `ops::conv::conv2d` on the same tensors), at the 3×3 shapes above
//! (the gradients are the same op either way). Without AVX-512 VNNI both run the f32 path.
//!
//! `cargo bench --bench conv`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::init::det_fill;
use edmips::core::ops::conv::{conv2d, conv2d_candle, conv2d_on_grids};
use edmips::core::ops::conv_cpu::{conv2d_cpu_with, ConvAlgo};
use edmips::core::ops::integer_conv::Grid;

fn conv(c: &mut Criterion) {
    edmips::engine::memory::tune_allocator();
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("conv2d_fwd_bwd");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    // (name, input [n, c, h, w], output channels, kernel, stride, padding)
    let cases = [
        ("r20-16ch-32x32", [128usize, 16, 32, 32], 16usize, 3usize, 1usize, 1usize),
        ("r20-32ch-16x16", [128, 32, 16, 16], 32, 3, 1, 1),
        ("r20-64ch-8x8", [128, 64, 8, 8], 64, 3, 1, 1),
        ("r18-64ch-56x56-b8", [8, 64, 56, 56], 64, 3, 1, 1),
        ("r18-128ch-28x28-b8", [8, 128, 28, 28], 128, 3, 1, 1),
        ("r18-256ch-14x14-b8", [8, 256, 14, 14], 256, 3, 1, 1),
        ("r18-512ch-7x7-b8", [8, 512, 7, 7], 512, 3, 1, 1),
        ("1x1-64to256-56x56-b8", [8, 64, 56, 56], 256, 1, 1, 0),
        ("r18-256to512-s2-14x14-b8", [8, 256, 14, 14], 512, 3, 2, 1),
        ("r18-stem-7x7-s2-224-b8", [8, 3, 224, 224], 64, 7, 2, 3),
    ];
    for (name, [n, ci, h, w], co, k, stride, pad) in cases {
        let x = Var::from_vec(det_fill(n * ci * h * w, 1, 1.0), (n, ci, h, w), &dev).unwrap();
        let wt = Var::from_vec(det_fill(co * ci * k * k, 2, 0.1), (co, ci, k, k), &dev).unwrap();
        let out = (h + 2 * pad - k) / stride + 1;
        group.throughput(Throughput::Elements((2 * n * co * out * out * ci * k * k) as u64));
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| {
                conv2d(x.as_tensor(), wt.as_tensor(), stride, [pad; 4]).unwrap().sum_all().unwrap().backward().unwrap()
            })
        });
        // The batched products take a plane of fewer than a quarter as many pixels as channels.
        let batched = co >= 4 * out * out;
        // The forward runs in bands of output rows where one sample's columns pass 4 MiB (the stem).
        let banded = co >= 64 && k > 1 && ci * k * k * out * out * 4 > 4 << 20;
        let algos = [
            ("ours-im2col", ConvAlgo::Im2col, k == 3 && stride == 1),
            ("ours-winograd", ConvAlgo::Winograd, k == 3 && stride == 1),
            ("ours-im2col-per-sample", ConvAlgo::Im2colPerSample, batched || banded),
        ];
        for (label, algo, _) in algos.into_iter().filter(|a| a.2) {
            group.bench_function(format!("{label}/{name}"), |b| {
                b.iter(|| {
                    conv2d_cpu_with(x.as_tensor(), wt.as_tensor(), stride, [pad; 4], algo)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            });
        }
        group.bench_function(format!("candle/{name}"), |b| {
            b.iter(|| {
                conv2d_candle(x.as_tensor(), wt.as_tensor(), stride, [pad; 4])
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn quantized(c: &mut Criterion) {
    edmips::engine::memory::tune_allocator();
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("quantized_conv2d_fwd");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    let gx = Grid { scale: 0.538, lo: 0, hi: 3 };
    let gw = Grid { scale: 0.025, lo: -3, hi: 3 };
    let cases = [
        ("r20-16ch-32x32", [128usize, 16, 32, 32], 16usize, 1usize),
        ("r20-32ch-16x16", [128, 32, 16, 16], 32, 1),
        ("r20-64ch-8x8", [128, 64, 8, 8], 64, 1),
        ("r18-64ch-56x56-b8", [8, 64, 56, 56], 64, 1),
        ("r18-128ch-28x28-b8", [8, 128, 28, 28], 128, 1),
        ("r18-256ch-14x14-b8", [8, 256, 14, 14], 256, 1),
        ("r18-512ch-7x7-b8", [8, 512, 7, 7], 512, 1),
        ("r18-256to512-s2-14x14-b8", [8, 256, 14, 14], 512, 2),
    ];
    // Codes in the grids' ranges, times their steps.
    let on = |n: usize, seed: u64, g: &Grid| -> Vec<f32> {
        det_fill(n, seed, 1.0)
            .iter()
            .map(|v| ((v.abs() * 997.0) as i32 % (g.hi - g.lo + 1) + g.lo) as f32 * g.scale)
            .collect()
    };
    for (name, [n, ci, h, w], co, stride) in cases {
        let x = Tensor::from_vec(on(n * ci * h * w, 1, &gx), (n, ci, h, w), &dev).unwrap();
        let wt = Tensor::from_vec(on(co * ci * 9, 2, &gw), (co, ci, 3, 3), &dev).unwrap();
        let out = (h + 2 - 3) / stride + 1;
        group.throughput(Throughput::Elements((2 * n * co * out * out * ci * 9) as u64));
        group.bench_function(format!("integer/{name}"), |b| {
            b.iter(|| conv2d_on_grids(&x, &wt, stride, [1; 4], gx, gw).unwrap())
        });
        group.bench_function(format!("f32/{name}"), |b| b.iter(|| conv2d(&x, &wt, stride, [1; 4]).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, conv, quantized);
criterion_main!(benches);
