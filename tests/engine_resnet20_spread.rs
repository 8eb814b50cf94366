//! The CUDA-vs-CPU tolerances of the ResNet-20 step comparison (`tests/common/resnet20.rs`,
//! run by `cuda_kernels.rs` on a GPU) leave a 3x margin over the chaos of a deep quantized
//! network: on the CPU, an input perturbed by up to ±3e-7 relative per value (one to a few f32
//! ulps, what another summation order does to an activation) moves each compared figure by less than a third of
//! its tolerance. Without this check a tolerance could be tighter than the network's own
//! sensitivity, and a correct GPU would fail.

mod common;

use common::resnet20::{check, diff, run_step, tolerance, Diff, CONFIGS};
use edmips::core::candle::Device;

fn max(a: Diff, b: Diff) -> Diff {
    Diff {
        ce: a.ce.max(b.ce),
        complexity_rel: a.complexity_rel.max(b.complexity_rel),
        logits: a.logits.max(b.logits),
        layer0_rel: a.layer0_rel.max(b.layer0_rel),
        alphas: a.alphas.max(b.alphas),
        weights: a.weights.max(b.weights),
        buffers: a.buffers.max(b.buffers),
    }
}

fn times(d: Diff, k: f64) -> Diff {
    Diff {
        ce: d.ce * k,
        complexity_rel: d.complexity_rel * k,
        logits: d.logits * k,
        layer0_rel: d.layer0_rel * k,
        alphas: d.alphas * k,
        weights: d.weights * k,
        buffers: d.buffers * k,
    }
}

#[test]
fn the_cuda_tolerances_are_three_times_the_cpu_perturbation_spread() {
    for (i, config) in CONFIGS.iter().enumerate() {
        let base = run_step(config, &Device::Cpu, 0.0);
        // The CPU step is deterministic: a rerun is identical.
        let again = diff(&run_step(config, &Device::Cpu, 0.0), &base);
        assert_eq!((again.logits, again.weights, again.buffers), (0.0, 0.0, 0.0), "{config}: CPU rerun differs");
        let mut spread = Diff::default();
        for p in [1e-7, -1e-7, 3e-7, -3e-7] {
            spread = max(spread, diff(&run_step(config, &Device::Cpu, p), &base));
        }
        println!("{config}: spread {spread:?}");
        check(&format!("{config}: 3x the perturbation spread"), &times(spread, 3.0), &tolerance(i)).unwrap();
    }
}
