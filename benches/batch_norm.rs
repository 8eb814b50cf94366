//! Train-mode batch norm, forward + backward on the CPU, at a ResNet-18 layer-1 shape and a
//! CIFAR ResNet-20 shape:
//!
//! * `batch_norm_train/{fused,composed}`: the fused op against the composed candle ops it
//!   replaces (`batch_norm_train_composed`);
//! * `batch_norm_then/{mix_fused,mix_composed}`: batch norm and the HWGQ a{2,3,4} mixture after
//!   it as one op (`Quantizer::mix_batch_norm`, decisions F15) against the two ops one after the
//!   other;
//! * `batch_norm_then/{add_fused,add_composed}`: batch norm and a residual addition as one op
//!   (`batch_norm_add`) against the two.
//!
//! `cargo bench --bench batch_norm`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::{DType, Device, Var};
use edmips::core::init::det_fill;
use edmips::core::ops::batch_norm::{batch_norm_train, batch_norm_train_composed, BatchNormParams};
use edmips::core::ops::bn_add::batch_norm_add;
use edmips::plugins::Hwgq;
use edmips::{Operand, Quantizer};

/// `[N, C, H, W]`.
type Dims = (usize, usize, usize, usize);

/// The two benchmark shapes.
const SHAPES: [(&str, Dims); 2] = [("2x256x56x56", (2, 256, 56, 56)), ("128x16x32x32", (128, 16, 32, 32))];

fn batch_norm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("batch_norm_train");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, shape) in SHAPES {
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

fn batch_norm_then(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("batch_norm_then");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let bits = [2u32, 3, 4];
    let probs = Var::new(&[0.2f32, 0.3, 0.5], &dev).unwrap();
    for (name, shape) in SHAPES {
        let (n, ch, h, w) = shape;
        let x = Var::from_vec(det_fill(n * ch * h * w, 1, 1.0), shape, &dev).unwrap();
        let r = Var::from_vec(det_fill(n * ch * h * w, 2, 1.0), shape, &dev).unwrap();
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
        let (q, a, pr) = (&Hwgq, Operand::Activation, probs.as_tensor());
        group.throughput(Throughput::Elements((n * ch * h * w) as u64));
        group.bench_function(format!("mix_fused/{name}"), |b| {
            b.iter(|| {
                let y = q.mix_batch_norm(x.as_tensor(), &p, "bn", a, &bits, pr, &[]).unwrap().unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
        group.bench_function(format!("mix_composed/{name}"), |b| {
            b.iter(|| {
                let y = q.mix(&batch_norm_train(x.as_tensor(), &p, "bn").unwrap(), a, &bits, pr, &[]).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
        group.bench_function(format!("add_fused/{name}"), |b| {
            b.iter(|| {
                let y = batch_norm_add(x.as_tensor(), &p, "bn", r.as_tensor()).unwrap().unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
        group.bench_function(format!("add_composed/{name}"), |b| {
            b.iter(|| {
                let y = batch_norm_train(x.as_tensor(), &p, "bn").unwrap().add(r.as_tensor()).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, batch_norm, batch_norm_then);
criterion_main!(benches);
