//! Parity of the quantizers with the reference: `hwgq.json` and `gauss_weight.json`.
//!
//! Runs on `EDMIPS_TEST_DEVICE` (default the CPU; `scripts/gpu-check.sh` also runs it on CUDA)
//! at the same tolerances: bit-exact where the README says so. The CUDA kernels are compiled
//! with `--fmad=false` and IEEE division (`ops::cuda::compile_options`) so that they round as
//! the CPU does; σ is computed in f64 and rounded once, so other summation orders do not show.

mod common;

use common::*;
use edmips::core::candle::{Tensor, Var};
use edmips::core::ops::stats::unbiased_std;
use edmips::plugins::{Gauss, Hwgq};
use edmips::{Operand, Quantizer};

/// Forward value and gradient of `sum(y * g)` for a quantizer applied to `x`.
fn run(q: impl Fn(&Tensor) -> Tensor, x: Vec<f32>, shape: &[usize], g: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
    let dev = test_device();
    let xv = Var::from_vec(x, shape, &dev).unwrap();
    let y = q(xv.as_tensor());
    let g = Tensor::from_vec(g, shape, &dev).unwrap();
    let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
    (host(&y), host(grads.get(xv.as_tensor()).unwrap()))
}

#[test]
fn hwgq_matches_the_reference_bit_for_bit() {
    let gold = load("hwgq.json");
    let cases = gold["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let bits = case["bit"].as_u64().unwrap() as u32;
        let x = f32s(&case["x"]);
        let n = x.len();
        let (y, gx) = run(|t| Hwgq.quantize(t, Operand::Activation, bits, &[]).unwrap(), x, &[n], f32s(&case["g"]));
        assert_exact(&format!("hwgq {bits}-bit y"), &y, &f32s(&case["y"]));
        assert_exact(&format!("hwgq {bits}-bit grad_x"), &gx, &f32s(&case["grad_x"]));
        if bits < 32 {
            assert_eq!(Hwgq::step(bits).unwrap(), case["step"].as_f64().unwrap());
            let mut levels: Vec<f32> = y.clone();
            levels.sort_by(f32::total_cmp);
            levels.dedup_by(|a, b| a == b);
            assert_exact(&format!("hwgq {bits}-bit levels"), &levels, &f32s(&case["levels"]));
        }
    }
}

#[test]
fn gauss_per_bit_matches_the_reference_bit_for_bit() {
    let gold = load("gauss_weight.json");
    let (shape, w) = tensor(&gold["W"]);
    let (_, g) = tensor(&gold["G"]);
    let wt = Tensor::from_vec(w.clone(), shape.as_slice(), &test_device()).unwrap();
    let std = unbiased_std(&wt).unwrap().to_vec1::<f32>().unwrap()[0];
    assert_eq!(std, gold["std_f32"].as_f64().unwrap() as f32, "unbiased std");
    for case in gold["per_bit"].as_array().unwrap() {
        let bits = case["bit"].as_u64().unwrap() as u32;
        assert_eq!(Gauss::sigma_step(bits).unwrap(), case["gaussian_step"].as_f64().unwrap());
        let (y, gw) = run(|t| Gauss.quantize(t, Operand::Weight, bits, &[]).unwrap(), w.clone(), &shape, g.clone());
        assert_exact(&format!("gauss {bits}-bit y"), &y, &tensor(&case["y"]).1);
        assert_exact(&format!("gauss {bits}-bit grad_w"), &gw, &tensor(&case["grad_w"]).1);
        let mut levels = y.clone();
        levels.sort_by(f32::total_cmp);
        levels.dedup();
        assert_exact(&format!("gauss {bits}-bit levels"), &levels, &f32s(&case["distinct_levels"]));
    }
}

#[test]
fn gauss_fixed_step_follows_round_half_to_even() {
    let gold = load("gauss_weight.json");
    for case in gold["fixed_step"].as_array().unwrap() {
        let bits = case["bit"].as_u64().unwrap() as u32;
        let step = case["step"].as_f64().unwrap();
        let x = f32s(&case["x"]);
        let n = x.len();
        let (y, gx) = run(|t| Gauss::quantize_with_step(t, bits, step).unwrap(), x, &[n], f32s(&case["g"]));
        assert_exact(&format!("gauss fixed step {step} {bits}-bit y"), &y, &f32s(&case["y"]));
        assert_exact(&format!("gauss fixed step {step} {bits}-bit grad"), &gx, &f32s(&case["grad_x"]));
    }
}

#[test]
fn gauss_shared_weight_mixture_matches_the_reference() {
    let gold = load("gauss_weight.json");
    let mix = &gold["shared_mix"];
    let (shape, w) = tensor(&gold["W"]);
    let (_, g) = tensor(&gold["G"]);
    let dev = test_device();
    let wv = Var::from_vec(w, shape.as_slice(), &dev).unwrap();
    let alpha = Var::from_vec(f32s(&mix["alpha_weight"]), 4, &dev).unwrap();
    let relax = edmips::plugins::Softmax::default();
    let q = edmips::Relaxation::weights(&relax, alpha.as_tensor(), &Default::default()).unwrap();
    assert_close("softmax", &host(&q), &f32s(&mix["softmax"]), 1e-7);
    let y = Gauss.mix(wv.as_tensor(), Operand::Weight, &[1, 2, 3, 4], &q, &[]).unwrap();
    let gt = Tensor::from_vec(g, shape.as_slice(), &dev).unwrap();
    let grads = y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("mixed_weight", &host(&y), &tensor(&mix["mixed_weight"]).1, 1e-7);
    assert_close("grad_w", &host(grads.get(wv.as_tensor()).unwrap()), &tensor(&mix["grad_w"]).1, 5e-7);
    assert_close(
        "grad_alpha_weight",
        &host(grads.get(alpha.as_tensor()).unwrap()),
        &f32s(&mix["grad_alpha_weight"]),
        1e-6,
    );
}

#[test]
fn fused_mixtures_equal_the_composed_default() {
    // The composed default (Quantizer::mix's fallback) and the fused kernels must agree.
    let dev = test_device();
    let x: Vec<f32> = edmips::core::init::det_fill(5000, 3, 3.0);
    let probs = Tensor::new(&[0.2f32, 0.3, 0.5], &dev).unwrap();
    let xt = Tensor::from_vec(x, 5000, &dev).unwrap();
    let fused = Hwgq.mix(&xt, Operand::Activation, &[2, 3, 4], &probs, &[]).unwrap();
    let composed = edmips::core::compose_mixture(&Hwgq, &xt, Operand::Activation, &[2, 3, 4], &probs, &[]).unwrap();
    assert_close("hwgq fused vs composed", &host(&fused), &host(&composed), 1e-6);
    let probs = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &dev).unwrap();
    let fused = Gauss.mix(&xt, Operand::Weight, &[1, 2, 3, 4], &probs, &[]).unwrap();
    let composed = edmips::core::compose_mixture(&Gauss, &xt, Operand::Weight, &[1, 2, 3, 4], &probs, &[]).unwrap();
    assert_close("gauss fused vs composed", &host(&fused), &host(&composed), 1e-6);
}
