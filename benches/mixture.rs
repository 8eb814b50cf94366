//! Fused versus composed quantizer mixtures, and one whole mixed layer (CPU).
//!
//! * `mixture/{fused,composed}/{hwgq,gauss}`: forward + backward of `Σ p_i Q_i(x)` on the
//!   activation of a ResNet-18 layer-1 conv at batch 32 (32×64×56×56) and on its weight.
//! * `mixture_kernel/{element_loop,portable,fastest}/...`: the CPU kernels alone (forward and
//!   backward over plain slices, HWGQ on the 32×64×56×56 activation): the element-by-element
//!   loop they replaced (single-threaded, as a reference), the branch-by-branch loops in the
//!   portable build, and on the fastest path of this processor (AVX2 where present).
//! * `mixed_layer`: one `MixedConv` (batch 32, 64→64, 56×56, 3×3) forward + backward.
//!
//! `cargo bench --bench mixture`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::{Device, Tensor, Var};
use edmips::core::init::det_fill;
use edmips::core::layers::MixedConv;
use edmips::core::{compose_mixture, LayerInfo, LayerKind};
use edmips::plugins::{Gauss, Hwgq, Softmax};
use edmips::{Operand, Quantizer, RelaxContext};

/// (name, quantizer, operand, bits, input, mixing weights).
type Case<'a> = (&'a str, &'a dyn Quantizer, Operand, &'a [u32], &'a Var, &'a Var);

fn mixtures(c: &mut Criterion) {
    let dev = Device::Cpu;
    let act_n = 32 * 64 * 56 * 56;
    let x = Var::from_vec(det_fill(act_n, 1, 2.0), act_n, &dev).unwrap();
    let w = Var::from_vec(det_fill(64 * 64 * 9, 2, 0.1), 64 * 64 * 9, &dev).unwrap();
    let pa = Var::new(&[0.2f32, 0.3, 0.5], &dev).unwrap();
    let pw = Var::new(&[0.1f32, 0.2, 0.3, 0.4], &dev).unwrap();
    let mut group = c.benchmark_group("mixture");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    let cases: [Case; 2] = [
        ("hwgq_a234_act_32x64x56x56", &Hwgq, Operand::Activation, &[2, 3, 4], &x, &pa),
        ("gauss_w1234_weight_64x64x3x3", &Gauss, Operand::Weight, &[1, 2, 3, 4], &w, &pw),
    ];
    for (name, q, operand, bits, input, p) in cases {
        group.throughput(Throughput::Elements(input.elem_count() as u64));
        group.bench_function(format!("fused/{name}"), |b| {
            b.iter(|| q.mix(input.as_tensor(), operand, bits, p.as_tensor(), &[]).unwrap().backward().unwrap())
        });
        group.bench_function(format!("composed/{name}"), |b| {
            b.iter(|| {
                compose_mixture(q, input.as_tensor(), operand, bits, p.as_tensor(), &[]).unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

fn mixture_kernels(c: &mut Criterion) {
    use edmips::core::ops::mixture::{cpu_backward_on, cpu_forward_on, cpu_reference, CpuPath};
    use edmips::plugins::quant::hwgq::HwgqElement;
    let n = 32 * 64 * 56 * 56;
    let x = det_fill(n, 1, 2.0);
    let g = det_fill(n, 5, 1.0);
    let probs = [0.2f32, 0.3, 0.5];
    // HWGQ 2, 3 and 4 bits: [step, thr, full].
    let params = [0.538f32, 1.614, 0.0, 0.3, 2.1, 0.0, 0.1, 1.5, 0.0];
    let mut group = c.benchmark_group("mixture_kernel");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(n as u64));
    group.bench_function("element_loop/hwgq_a234_32x64x56x56", |b| {
        b.iter(|| cpu_reference::<HwgqElement>(&x, &probs, &params, &g))
    });
    for (name, path) in [("portable", CpuPath::Portable), ("fastest", CpuPath::detect())] {
        group.bench_function(format!("{name}/hwgq_a234_32x64x56x56"), |b| {
            let (mut y, mut dx) = (vec![0f32; n], vec![0f32; n]);
            b.iter(|| {
                cpu_forward_on::<HwgqElement>(path, &x, &probs, &params, &mut y);
                cpu_backward_on::<HwgqElement>(path, &x, &probs, &params, &g, &mut dx)
            })
        });
    }
    group.finish();
}

fn mixed_layer(c: &mut Criterion) {
    let dev = Device::Cpu;
    let info = LayerInfo {
        index: 0,
        name: "layer1.0.conv1".into(),
        kind: LayerKind::Conv2d,
        in_channels: 64,
        out_channels: 64,
        kernel: (3, 3),
        stride: (1, 1),
        padding: [1; 4],
        input_hw: (56, 56),
        output_hw: (56, 56),
    };
    let layer = MixedConv {
        info,
        weight: Var::from_vec(det_fill(64 * 64 * 9, 3, 0.06), (64, 64, 3, 3), &dev).unwrap(),
        alpha_activ: Var::new(&[0.01f32; 3], &dev).unwrap(),
        alpha_weight: Var::new(&[0.01f32; 4], &dev).unwrap(),
        abits: vec![2, 3, 4],
        wbits: vec![1, 2, 3, 4],
        act_quantizer: Arc::new(Hwgq),
        weight_quantizer: Arc::new(Gauss),
        relaxation: Arc::new(Softmax::default()),
        act_learned: Default::default(),
        weight_learned: Default::default(),
    };
    let x = Tensor::from_vec(det_fill(32 * 64 * 56 * 56, 4, 2.0), (32, 64, 56, 56), &dev).unwrap();
    let ctx = RelaxContext::default();
    let mut group = c.benchmark_group("mixed_layer");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(32));
    group.bench_function("b32_64to64_56x56_k3_fwd_bwd", |b| {
        b.iter(|| layer.forward(&x, &ctx).unwrap().y.sum_all().unwrap().backward().unwrap())
    });
    group.finish();
}

criterion_group!(benches, mixtures, mixture_kernels, mixed_layer);
criterion_main!(benches);
