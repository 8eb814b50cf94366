//! Every backbone at its input size: forward (shape) and backward in search mode on the CPU,
//! parameter counts, and the input-size errors.
//!
//! Expected parameter counts (weights, BN affine and fc; no alphas, no running stats), with
//! `bn(c) = 2c`:
//!
//! * ResNet-18: conv1 3·64·49 + bn1 + per BasicBlock `bn0(in) + in·p·9 + bn(p) + p·p·9 + bn(p)`
//!   (+ `in·p + bn(p)` downsample in stages 2-4) + fc 512·1000 + 1000 = 11,692,456.
//! * ResNet-50: the same with Bottleneck `bn0(in) + in·p + bn(p) + p·p·9 + bn(p) + p·4p + bn(4p)`
//!   (+ `in·4p + bn(4p)` downsample in every stage) + fc 2048·1000 + 1000 = 25,583,272.
//! * GoogLeNet: conv1 3·64·49, conv2 bn(64) + 64·64, conv3 bn(64) + 64·192·9, per module
//!   `bn(in) + in·c1 + in·c3r + bn(c3r) + c3r·c3·9 + in·c5r + bn(c5r) + c5r·c5·25 + bn(in) + in·pp`,
//!   head bn(1024) + fc 1024·1000 + 1000 = 7,015,144.
//! * Inception-V3: stem 3·32·9 + bn(32) + 32·32·9 + bn(32) + 32·64·9 + bn(64) + 64·80 + bn(80) +
//!   80·192·9, modules A/B/C/D/E as in decisions.md R11, head bn(2048) + fc 2048·1000 + 1000
//!   = 23,850,952.
//! * ResNet-20 (3×32×32, 10 classes): conv1 3·16·9 + bn1 + nine BasicBlocks (16/32/64) + two
//!   downsamples + head_bn(64) + fc 64·10 + 10 = 273,178; grayscale: 272,890 (one input
//!   channel: 16·9 fewer).
//! * tiny: conv1 3·8·9 + bn1 + BasicBlock 8→8 + BasicBlock 8→16 with downsample + fc 16·10 + 10
//!   = 5,298.
//!
//! Search mode adds 7 logits per searchable layer.

mod common;

use std::time::Instant;

use common::*;
use edmips::core::candle::{DType, Device, Tensor};
use edmips::core::graph::build_network;
use edmips::core::init::det_fill;
use edmips::core::param_store::ParamGroup;
use edmips::core::{ModelConfig, PluginSpec};
use edmips::{registry, RelaxContext};

fn config(name: &str) -> ModelConfig {
    edmips::link_builtins();
    *registry::build_config(&PluginSpec::new(name)).unwrap()
}

/// Builds the search network, checks its parameter counts, and runs forward (train mode) and
/// backward at batch `n`; returns the seconds forward + backward took.
fn run(cfg: &ModelConfig, n: usize, weights: usize, layers: usize) -> f64 {
    let net = build_network(cfg, None, &Device::Cpu, 3).unwrap();
    assert_eq!(net.searchable_layers().len(), layers, "{}: searchable layers", cfg.backbone.id);
    let count = |g: ParamGroup| net.params().group(g).iter().map(|p| p.var.elem_count()).sum::<usize>();
    assert_eq!(count(ParamGroup::Weight), weights, "{}: weight count", cfg.backbone.id);
    assert_eq!(count(ParamGroup::Arch), 7 * layers, "{}: logit count", cfg.backbone.id);
    assert_eq!(net.params().trainable_count(), weights + 7 * layers);

    let s = &net.graph().input;
    let x = Tensor::from_vec(
        det_fill(n * s.channels * s.size * s.size, 5, 1.0),
        (n, s.channels, s.size, s.size),
        &Device::Cpu,
    )
    .unwrap();
    let t = Instant::now();
    let f = net.forward(&x, true, &RelaxContext::default()).unwrap();
    assert_eq!(f.logits.dims(), &[n, cfg.num_classes], "{}: logits", cfg.backbone.id);
    assert_eq!(f.dists.len(), layers);
    assert_eq!(f.layer_outputs.len(), layers);
    assert!(host(&f.logits).iter().all(|v| v.is_finite()));
    let grads = f.logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let secs = t.elapsed().as_secs_f64();
    for p in net.params().iter().filter(|p| p.group != ParamGroup::Buffer) {
        let g =
            grads.get(p.var.as_tensor()).unwrap_or_else(|| panic!("{}: no gradient for {}", cfg.backbone.id, p.name));
        assert_eq!(g.dims(), p.var.dims(), "{}", p.name);
    }
    eprintln!("{}: forward+backward at batch {n} on CPU: {secs:.2} s", cfg.backbone.id);
    secs
}

#[test]
fn resnet18_forward_backward() {
    run(&config("mixres18_w1234a234"), 2, 11_692_456, 19);
}

#[test]
fn resnet50_forward_backward() {
    run(&config("mixres50_w1234a234"), 2, 25_583_272, 52);
}

#[test]
fn googlenet_forward_backward() {
    run(&config("mixgoogle_w1234a234"), 2, 7_015_144, 56);
}

#[test]
fn inception_v3_forward_backward() {
    run(&config("mixinception_w1234a234"), 2, 23_850_952, 93);
}

#[test]
fn resnet20_forward_backward_rgb_and_grayscale() {
    run(&config("mixres20_w1234a234"), 2, 273_178, 20);
    let mut cfg = config("mixres20_w1234a234");
    cfg.backbone.params.insert("channels".into(), 1.into());
    cfg.backbone.params.insert("size".into(), 28.into());
    run(&cfg, 2, 272_890, 20);
    let g = edmips::core::graph::declare_graph(&cfg).unwrap();
    assert_eq!((g.input.channels, g.input.size, g.input.mean.clone()), (1, 28, vec![0.2860]));
    assert_eq!(g.searchable_layers()[15].name, "layer3.0.downsample.0");
    assert_eq!(g.searchable_layers()[19].name, "layer3.2.conv2");
    cfg.backbone.params.insert("channels".into(), 2.into());
    let e = edmips::core::graph::declare_graph(&cfg).unwrap_err().to_string();
    assert!(e.contains("channels") && e.contains("must be 1 or 3"), "{e}");
}

#[test]
fn tiny_forward_backward() {
    run(&config("mixtiny_w1234a234"), 2, 5_298, 5);
}

#[test]
fn wrong_input_sizes_name_the_expected_size() {
    let net = build_network(&config("quantres18_2w2a"), None, &Device::Cpu, 0).unwrap();
    let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let e = net.forward(&x, false, &RelaxContext::default()).unwrap_err().to_string();
    assert!(e.contains("[N, 3, 224, 224]") && e.contains("224x224"), "{e}");
    // Declaring a backbone at an input size its head cannot take fails at build time.
    let rn = registry::build_backbone(&PluginSpec::new("resnet18")).unwrap();
    let e = edmips::core::graph::NetBuilder::declare_with_input(
        rn.as_ref(),
        edmips::core::InputSpec::imagenet(256, 292),
        1000,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("7x7") && e.contains("8x8"), "{e}");
}
