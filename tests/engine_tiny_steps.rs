//! Two search steps of the golden tiny network through the public API (`tiny_search_step.json`):
//! the engine's loss (candle cross-entropy + cd · BitOps complexity) and its two SGD optimisers,
//! compared after each update at the README's tight tolerances.

mod common;

use common::*;
use edmips::core::candle::{Device, Tensor};
use edmips::core::engine::optim::Sgd;
use edmips::core::engine::trainer::complexity;
use edmips::core::graph::build_network;
use edmips::core::params::ParamGroup;
use edmips::{registry, RelaxContext};

#[test]
fn two_search_steps_match_the_reference() {
    edmips::link_builtins();
    let gold = load("tiny_search_step.json");
    let dev = Device::Cpu;
    let cfg = registry::build_config(&edmips::PluginSpec::new("mixtiny_w1234a234")).unwrap();
    let net = build_network(&cfg, None, &dev, 0).unwrap();
    let cost = registry::build_cost(&cfg.cost).unwrap();
    let names = load_golden_params(&net, &gold["parameters"]);
    let o = &gold["optim"];
    let group = |g| net.params().group(g).into_iter().map(|p| (p.name.clone(), p.var.clone())).collect();
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let mut wopt = Sgd::new(
        group(ParamGroup::Weight),
        f(&o["weights"], "lr"),
        f(&o["weights"], "momentum"),
        f(&o["weights"], "weight_decay"),
    );
    let mut aopt = Sgd::new(
        group(ParamGroup::Arch),
        f(&o["alphas"], "lr"),
        f(&o["alphas"], "momentum"),
        f(&o["alphas"], "weight_decay"),
    );
    let cd = f(o, "cd");
    let x = candle_tensor(&gold["input"]["x"]);
    let y: Vec<u32> = gold["target"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let y = Tensor::new(y.as_slice(), &dev).unwrap();

    for k in 0..3 {
        let step = &gold["steps"][k];
        let fwd = net.forward(&x, true, &RelaxContext::default()).unwrap();
        for (a, b) in host(&fwd.logits).iter().zip(f32s(&step["logits"]["data"])) {
            assert_rel(&format!("step {k} logit"), *a as f64, b as f64, 1e-5);
        }
        let ce = candle_ce(&fwd.logits, &y);
        let comp = complexity(&net, cost.as_ref(), &fwd).unwrap().unwrap();
        let loss = ce.add(&comp.affine(cd, 0.0).unwrap()).unwrap();
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;
        assert_rel(&format!("step {k} ce"), s(&ce), step["ce"].as_f64().unwrap(), 1e-5);
        assert_rel(&format!("step {k} complexity"), s(&comp), step["complexity_loss"].as_f64().unwrap(), 1e-6);
        assert_rel(&format!("step {k} loss"), s(&loss), step["loss"].as_f64().unwrap(), 1e-5);
        let logits = net.logits().unwrap();
        let a: Vec<f32> = logits.iter().flat_map(|l| l.0.clone()).collect();
        let w: Vec<f32> = logits.iter().flat_map(|l| l.1.clone()).collect();
        let flat = |v: &serde_json::Value| v.as_array().unwrap().iter().flat_map(f32s).collect::<Vec<f32>>();
        assert_close(&format!("step {k} alpha_activ"), &a, &flat(&step["alpha_activ"]), 1e-6);
        assert_close(&format!("step {k} alpha_weight"), &w, &flat(&step["alpha_weight"]), 1e-6);
        if k == 2 {
            break;
        }
        let grads = loss.backward().unwrap();
        wopt.step(&grads).unwrap();
        aopt.step(&grads).unwrap();
        let after = &step["params_after_update"];
        for p in net.params().iter().filter(|p| p.group != ParamGroup::Buffer) {
            let want = &after[names[&p.name].as_str()];
            let want = if want.is_object() { tensor(want).1 } else { f32s(want) };
            assert_close(&format!("step {k} {} after update", p.name), &host(p.var.as_tensor()), &want, 1e-6);
        }
    }
}

fn candle_ce(logits: &Tensor, y: &Tensor) -> Tensor {
    edmips::core::engine::trainer::cross_entropy(logits, y).unwrap()
}
