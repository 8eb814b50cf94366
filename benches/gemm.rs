//! The Winograd products `M_ξ = U_ξ · V_ξ` (`O × C` times `C × tiles`) at the shapes of the
//! ResNet-20 and ResNet-18 layers: our AVX2/FMA kernel that reads `V_ξ` in place
//! (`ops::short_k_gemm::matmul_short_k`, decisions F12) against the `gemm` crate, which packs
//! both operands first (`matmul_packed`, the path it replaces where `K ≤ 64`). One thread.
//!
//! `cargo bench --bench gemm`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::init::det_fill;
use edmips::core::ops::short_k_gemm::{matmul_packed, matmul_short_k};

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("winograd_products");
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    // (name, M = output channels, N = tile columns of a chunk, K = input channels)
    let cases = [
        ("r20-16ch", 16usize, 256usize, 16usize),
        ("r20-32ch", 32, 256, 32),
        ("r18-64ch", 64, 784, 64),
        ("r18-128ch", 128, 196, 128),
        ("r18-256ch", 256, 98, 256),
    ];
    for (name, m, n, k) in cases {
        let a = det_fill(m * k, 1, 1.0);
        let b = det_fill(k * n, 2, 1.0);
        let mut out = vec![0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(format!("short-k/{name}"), |bn| bn.iter(|| matmul_short_k(m, n, k, &a, &b, &mut out)));
        group.bench_function(format!("gemm-crate/{name}"), |bn| bn.iter(|| matmul_packed(m, n, k, &a, &b, &mut out)));
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
