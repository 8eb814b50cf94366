//! One search step of the full ResNet-18 against `search_step.json`, at the loose tolerances its
//! README gives (a deep quantized network is chaotic under float rounding, D19): exact where the
//! maths is exact (complexity and its gradient), loose for CE, logits and the updated logits.
//!
//! Runs on `EDMIPS_TEST_DEVICE` (default the CPU; `scripts/gpu-check.sh` also runs it on CUDA)
//! at the same tolerances: they are about 3x the spread that a 1e-7 perturbation causes
//! (README of the golden data), and a GPU's other summation orders are such a perturbation.
//! The complexity and its gradient do not depend on the data and stay tight (1e-6 relative,
//! 1e-7 absolute: the gradients are about 2e-3, so that is hundreds of ulps).

mod common;

use common::*;
use edmips::core::candle::Tensor;
use edmips::core::graph::build_network;
use edmips::core::init::det_fill;
use edmips::core::param_store::ParamGroup;
use edmips::engine::step::{apply_update, cross_entropy, step_loss, Optimizers, SgdParams};
use edmips::{registry, RelaxContext};

#[test]
fn a_full_resnet18_search_step_matches_the_reference_loosely() {
    edmips::link_builtins();
    let gold = load("search_step.json");
    let dev = test_device();
    let mut cfg = registry::build_config(&edmips::PluginSpec::new("mixres18_w1234a234")).unwrap();
    cfg.num_classes = 10;
    let net = build_network(&cfg, None, &dev, 0).unwrap();
    let cost = registry::build_cost(&cfg.cost).unwrap();
    let params = gold["parameters"].as_array().unwrap();
    assert_eq!(params.len(), 116);
    load_golden_params(&net, &gold["parameters"]);
    let inp = &gold["input"];
    let shape: Vec<usize> = inp["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let xv = det_fill(shape.iter().product(), inp["det_fill_seed"].as_u64().unwrap(), inp["scale"].as_f64().unwrap());
    assert_exact("input first_8", &xv[..8], &f32s(&inp["first_8"]));
    assert_rel("input sum", xv.iter().map(|&v| v as f64).sum(), inp["sum_f64"].as_f64().unwrap(), 1e-12);
    let x = Tensor::from_vec(xv, shape, &dev).unwrap();
    let y: Vec<u32> = gold["target"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let y = Tensor::new(y.as_slice(), &dev).unwrap();
    let o = &gold["optim"];
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let sgd = |v: &serde_json::Value| SgdParams {
        lr: f(v, "lr"),
        momentum: f(v, "momentum"),
        weight_decay: f(v, "weight_decay"),
    };
    let mut optim = Optimizers::new(&net, sgd(&o["weights"]), Some(sgd(&o["alphas"])));
    let cd = f(o, "cd");
    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;
    let flat = |v: &serde_json::Value| v.as_array().unwrap().iter().flat_map(f32s).collect::<Vec<f32>>();

    // Step 0: forward, loss, complexity gradient, update.
    let s0 = &gold["steps"][0];
    let step = step_loss(&net, cost.as_ref(), &x, &y, &RelaxContext::train(0, 0, 0), cd).unwrap();
    let (fwd, ce, comp) = (&step.fwd, &step.ce, step.complexity.clone().unwrap());
    assert_rel("complexity", scalar(&comp), s0["complexity_loss"].as_f64().unwrap(), 1e-6);
    assert!((scalar(ce) - s0["ce"].as_f64().unwrap()).abs() < 0.12, "ce {} vs {}", scalar(ce), s0["ce"]);
    assert_close("step 0 logits", &host(&fwd.logits), &f32s(&s0["logits"]["data"]), 0.25);
    for (i, tol) in [(0, 2e-5), (1, 2e-4)] {
        let v = host(&fwd.layer_outputs[i]);
        let c = &s0["layer_output_checksums"][i];
        assert_rel(&format!("layer {i} sum"), v.iter().map(|&x| x as f64).sum(), c["out_sum"].as_f64().unwrap(), tol);
        let sq: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
        assert_rel(&format!("layer {i} sumsq"), sq, c["out_sumsq"].as_f64().unwrap(), tol);
    }
    let comp_grads = comp.affine(cd, 0.0).unwrap().backward().unwrap();
    let arch = net.params().group(ParamGroup::Arch);
    let part = |suffix: &str| -> Vec<f32> {
        arch.iter()
            .filter(|p| p.name.ends_with(suffix))
            .flat_map(|p| host(comp_grads.get(p.var.as_tensor()).unwrap()))
            .collect()
    };
    assert_close(
        "complexity part of d alpha_activ",
        &part(".alpha_activ"),
        &flat(&s0["grad_alpha_activ_complexity_part"]),
        1e-7,
    );
    assert_close(
        "complexity part of d alpha_weight",
        &part(".alpha_weight"),
        &flat(&s0["grad_alpha_weight_complexity_part"]),
        1e-7,
    );
    apply_update(step, &mut optim).unwrap();

    // Step 1: the forward after the update.
    let s1 = &gold["steps"][1];
    let fwd = net.forward(&x, true, &RelaxContext::train(0, 1, 0)).unwrap();
    let ce = cross_entropy(&fwd.logits, &y).unwrap();
    assert!((scalar(&ce) - s1["ce"].as_f64().unwrap()).abs() < 0.15, "step 1 ce {} vs {}", scalar(&ce), s1["ce"]);
    assert_close("step 1 logits", &host(&fwd.logits), &f32s(&s1["logits"]["data"]), 0.6);
    let logits = net.logits().unwrap();
    let a: Vec<f32> = logits.iter().flat_map(|l| l.0.clone()).collect();
    let w: Vec<f32> = logits.iter().flat_map(|l| l.1.clone()).collect();
    assert_close("updated alpha_activ", &a, &flat(&s1["alpha_activ"]), 6e-4);
    assert_close("updated alpha_weight", &w, &flat(&s1["alpha_weight"]), 6e-4);
}
