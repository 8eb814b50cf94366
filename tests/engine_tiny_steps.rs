//! Two search steps of the golden tiny network through the public API (`tiny_search_step.json`):
//! the engine's loss (candle cross-entropy + cd · BitOps complexity) and its two SGD optimisers,
//! compared after each update at the README's tight tolerances.

mod common;

use common::*;
use edmips::core::candle::{Device, Tensor};
use edmips::core::graph::build_network;
use edmips::core::param_store::ParamGroup;
use edmips::engine::step::{step_loss, train_step, Optimizers, SgdParams};
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
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let sgd = |v: &serde_json::Value| SgdParams {
        lr: f(v, "lr"),
        momentum: f(v, "momentum"),
        weight_decay: f(v, "weight_decay"),
    };
    let mut optim = Optimizers::new(&net, sgd(&o["weights"]), Some(sgd(&o["alphas"])));
    let cd = f(o, "cd");
    let x = candle_tensor(&gold["input"]["x"]);
    let y: Vec<u32> = gold["target"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let y = Tensor::new(y.as_slice(), &dev).unwrap();
    let s = |t: &Tensor| t.to_scalar::<f32>().unwrap() as f64;

    for k in 0..3 {
        let step = &gold["steps"][k];
        let logits = net.logits().unwrap();
        let a: Vec<f32> = logits.iter().flat_map(|l| l.0.clone()).collect();
        let w: Vec<f32> = logits.iter().flat_map(|l| l.1.clone()).collect();
        let flat = |v: &serde_json::Value| v.as_array().unwrap().iter().flat_map(f32s).collect::<Vec<f32>>();
        assert_close(&format!("step {k} alpha_activ"), &a, &flat(&step["alpha_activ"]), 1e-6);
        assert_close(&format!("step {k} alpha_weight"), &w, &flat(&step["alpha_weight"]), 1e-6);
        let ctx = RelaxContext::train(0, k as u64, 0);
        // The last golden step is a forward only; the others are the engine's whole step.
        let (out_logits, ce, comp, loss) = if k == 2 {
            let l = step_loss(&net, cost.as_ref(), &x, &y, &ctx, cd).unwrap();
            (l.fwd.logits.clone(), s(&l.ce), s(l.complexity.as_ref().unwrap()), s(&l.loss))
        } else {
            let o = train_step(&net, cost.as_ref(), &mut optim, &x, &y, &ctx, cd).unwrap();
            (o.logits, o.ce, o.complexity, o.loss)
        };
        for (a, b) in host(&out_logits).iter().zip(f32s(&step["logits"]["data"])) {
            assert_rel(&format!("step {k} logit"), *a as f64, b as f64, 1e-5);
        }
        assert_rel(&format!("step {k} ce"), ce, step["ce"].as_f64().unwrap(), 1e-5);
        assert_rel(&format!("step {k} complexity"), comp, step["complexity_loss"].as_f64().unwrap(), 1e-6);
        assert_rel(&format!("step {k} loss"), loss, step["loss"].as_f64().unwrap(), 1e-5);
        if k == 2 {
            break;
        }
        let after = &step["params_after_update"];
        for p in net.params().iter().filter(|p| p.group != ParamGroup::Buffer) {
            let want = &after[names[&p.name].as_str()];
            let want = if want.is_object() { tensor(want).1 } else { f32s(want) };
            assert_close(&format!("step {k} {} after update", p.name), &host(p.var.as_tensor()), &want, 1e-6);
        }
    }
}
