//! Train-mode batch norm, forward + backward on the CPU: the fused op against the composed
//! candle ops it replaces (`batch_norm_train_composed`), at a ResNet-18 layer-1 shape and a
//! CIFAR ResNet-20 shape.
//!
//! `cargo bench --bench batch_norm`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::{DType, Device, Var};
use edmips::core::init::det_fill;
use edmips::core::ops::batch_norm::{batch_norm_train, batch_norm_train_composed, BatchNormParams};

fn batch_norm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("batch_norm_train");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, shape) in [("2x256x56x56", (2, 256, 56, 56)), ("128x16x32x32", (128, 16, 32, 32))] {
        let (n, ch, h, w) = shape;
        let x = Var::from_vec(det_fill(n * ch * h * w, 1, 1.0), shape, &dev).unwrap();
        let gamma = Var::ones(ch, DType::F32, &dev).unwrap();
        let beta = Var::zeros(ch, DType::F32, &dev).unwrap();
        let rm = Var::zeros(ch, DType::F32, &dev).unwrap();
        let rv = Var::ones(ch, DType::F32, &dev).unwrap();
        let p = BatchNormParams {
            weight: Some(gamma.as_tensor()),
            bias: Some(beta.as_tensor()),
            running_mean: &rm,
            running_var: &rv,
            eps: 1e-5,
            momentum: 0.1,
        };
        group.throughput(Throughput::Elements((n * ch * h * w) as u64));
        group.bench_function(format!("fused/{name}"), |b| {
            b.iter(|| batch_norm_train(x.as_tensor(), &p, "bn").unwrap().sum_all().unwrap().backward().unwrap())
        });
        group.bench_function(format!("composed/{name}"), |b| {
            b.iter(|| {
                batch_norm_train_composed(x.as_tensor(), &p, "bn").unwrap().sum_all().unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, batch_norm);
criterion_main!(benches);
