//! The train-mode fusions of a batch norm with the op after it, network level: into the
//! quantized conv's activation quantizer (`Quantizer::mix_batch_norm`,
//! `core/src/ops/bn_mixture.rs`) and into the residual addition (`core/src/ops/bn_add.rs`). The
//! fused and the composed forward give the same logits, gradients of every parameter and running
//! statistics, in search mode and in fixed-bit retraining, over two steps of gradient updates.

use edmips::core::candle::{Device, Tensor};
use edmips::core::graph::build_network;
use edmips::core::init::det_fill;
use edmips::core::param_store::ParamGroup;
use edmips::core::PluginSpec;
use edmips::{registry, RelaxContext};

/// `(name, values)` of the logits, every gradient and every buffer.
type Trace = Vec<(String, Vec<f32>)>;

/// The fusable batch-norm counts (into a quantized conv, into an addition) and the [`Trace`]
/// after each of two steps.
fn trace(config: &str, fused: bool) -> ((usize, usize), Trace) {
    edmips::link_builtins();
    let cfg = registry::build_config(&PluginSpec::new(config)).unwrap();
    let mut net = build_network(&cfg, None, &Device::Cpu, 7).unwrap();
    net.set_fused_batch_norm(fused);
    let s = net.graph().input.clone();
    let n = 4;
    let x = Tensor::from_vec(
        det_fill(n * s.channels * s.size * s.size, 5, 1.0),
        (n, s.channels, s.size, s.size),
        &Device::Cpu,
    )
    .unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut out = Vec::new();
    for step in 0..2 {
        let f = net.forward(&x, true, &RelaxContext::default()).unwrap();
        let g =
            Tensor::from_vec(det_fill(f.logits.elem_count(), 11 + step, 1.0), f.logits.shape(), &Device::Cpu).unwrap();
        let grads = f.logits.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        out.push((format!("step {step} logits"), flat(&f.logits)));
        for p in net.params().iter() {
            if p.group == ParamGroup::Buffer {
                out.push((format!("step {step} buffer {}", p.name), flat(p.var.as_tensor())));
                continue;
            }
            let gv = grads.get(p.var.as_tensor()).map(flat).unwrap_or_default();
            out.push((format!("step {step} grad {}", p.name), gv.clone()));
            // A plain gradient step, so the second step runs on moved weights and statistics.
            if !gv.is_empty() {
                let moved = (p.var.as_tensor() - (grads.get(p.var.as_tensor()).unwrap() * 0.01).unwrap()).unwrap();
                p.var.set(&moved).unwrap();
            }
        }
    }
    ((net.fusable_batch_norms(), net.batch_norms_into_add()), out)
}

fn same(config: &str) {
    let ((nf, na), fused) = trace(config, true);
    let (_, composed) = trace(config, false);
    // ResNet-20: every block's bn1, and bn0 in the seven blocks without a downsample (bn2 feeds
    // the addition, a downsampling block's bn0 also its shortcut, the stem's bn1 a block and
    // its residual).
    assert_eq!(nf, 16, "{config}: batch norms that feed a quantized conv alone");
    // And every block's bn2, the first operand of its addition.
    assert_eq!(na, 9, "{config}: batch norms that feed an addition alone");
    assert_eq!(fused.len(), composed.len());
    for ((name, a), (_, b)) in fused.iter().zip(&composed) {
        // `==` equates +0 and -0 (candle's backward adds each gradient to +0, so a gradient's
        // zero sign may differ between the forms); buffers are compared bit for bit.
        if name.contains("buffer") {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b), "{config}: {name}");
        } else {
            assert_eq!(a, b, "{config}: {name}");
        }
    }
    assert!(fused.iter().any(|(n, v)| n.contains("grad") && n.contains("bn") && v.iter().any(|&x| x != 0.0)));
}

#[test]
fn fused_batch_norm_equals_the_composition_in_retraining() {
    same("quantres20_2w2a");
}

#[test]
fn fused_batch_norm_equals_the_composition_in_search() {
    same("mixres20_w1234a234");
}
