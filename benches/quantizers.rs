//! Quantize forward + backward for each quantizer × bit width on 1M elements (CPU).
//!
//! `cargo bench --bench quantizers`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edmips::core::candle::{Device, Var};
use edmips::core::init::det_fill;
use edmips::plugins::{Gauss, Hwgq};
use edmips::{Operand, Quantizer};

const N: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Var::from_vec(det_fill(N, 1, 2.0), N, &dev).unwrap();
    let mut group = c.benchmark_group("quantize_fwd_bwd_1M");
    group.throughput(Throughput::Elements(N as u64));
    let cases: [(&dyn Quantizer, Operand, &[u32]); 2] =
        [(&Hwgq, Operand::Activation, &[1, 2, 3, 4, 32]), (&Gauss, Operand::Weight, &[1, 2, 3, 4])];
    for (q, operand, bits) in cases {
        for &b in bits {
            group.bench_with_input(BenchmarkId::new(q.id(), b), &b, |bch, &b| {
                bch.iter(|| {
                    let y = q.quantize(x.as_tensor(), operand, b, &[]).unwrap();
                    y.backward().unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
