//! Max pooling's CPU kernels on ResNet-18's stem pool (3×3, stride 2, padding 1, on the
//! 8×64×112×112 output of the stem conv at batch 8):
//!
//! * `max_pool/forward/{search,recorded}`: the window-by-window search (the loop the forward ran
//!   before, without recording offsets) against the forward that records each window's argmax
//!   offset, sixteen windows of a row at a time.
//! * `max_pool/backward/{search,scatter}`: the backward that searches every window again
//!   against the scatter from the recorded offsets (with its per-layer offset table).
//!
//! `cargo bench --bench pool`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::{Device, Tensor};
use edmips::core::graph::PoolOpts;
use edmips::core::init::det_fill;
use edmips::core::ops::max_pool::{cpu_backward, cpu_backward_from_offsets, cpu_forward, cpu_forward_with_offsets};
use edmips::core::ops::pool::PoolGeom;

fn max_pool(c: &mut Criterion) {
    let dims = (8usize, 64usize, 112usize, 112usize);
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    let x = det_fill(n, 3, 2.0);
    let xt = Tensor::from_vec(x.clone(), dims, &Device::Cpu).unwrap();
    let g = PoolGeom::new(&xt, &PoolOpts::new(3, 2, 1), "bench").unwrap();
    let outs = g.planes * g.out_plane();
    let gy = det_fill(outs, 4, 1.0);
    let mut group = c.benchmark_group("max_pool");
    group.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(n as u64));
    let (mut y, mut offs) = (vec![0f32; outs], vec![0u8; outs]);
    group.bench_function("forward/search/8x64x112x112", |b| b.iter(|| cpu_forward(&g, &x, &mut y)));
    group.bench_function("forward/recorded/8x64x112x112", |b| {
        b.iter(|| cpu_forward_with_offsets(&g, &x, &mut y, &mut offs))
    });
    let mut dx = vec![0f32; n];
    group.bench_function("backward/search/8x64x112x112", |b| {
        b.iter(|| {
            dx.fill(0.0);
            cpu_backward(&g, &x, &gy, &mut dx)
        })
    });
    group.bench_function("backward/scatter/8x64x112x112", |b| {
        b.iter(|| {
            dx.fill(0.0);
            cpu_backward_from_offsets(&g, &offs, &gy, &mut dx)
        })
    });
    group.finish();
}

criterion_group!(benches, max_pool);
criterion_main!(benches);
