//! The network executor on the golden tiny network: parameter names and order, forward and
//! backward parity with the reference's first step (`tiny_search_step.json`), running
//! statistics, modes, bad inputs and architecture files.

mod common;

use std::path::Path;

use common::*;
use edmips::core::arch_file::{arch_json, check_arch_bits, load_arch_file, parse_arch};
use edmips::core::candle::{DType, Device, Tensor};
use edmips::core::graph::{build_network, LayerMode, Network};
use edmips::core::param_store::ParamGroup;
use edmips::plugins::{BitOps, Gauss, Hwgq};
use edmips::{registry, ComplexityCost, RelaxContext};

fn tiny_search() -> Network {
    edmips::link_builtins();
    let cfg = registry::build_config(&edmips::PluginSpec::new("mixtiny_w1234a234")).unwrap();
    build_network(&cfg, None, &Device::Cpu, 7).unwrap()
}

/// Mean cross entropy of `logits` `[N, K]` for `targets`.
fn cross_entropy(logits: &Tensor, targets: &[usize]) -> Tensor {
    let (n, k) = logits.dims2().unwrap();
    let m = logits.max_keepdim(1).unwrap().detach();
    let lse = logits.broadcast_sub(&m).unwrap().exp().unwrap().sum_keepdim(1).unwrap().log().unwrap().add(&m).unwrap();
    let mut onehot = vec![0f32; n * k];
    for (i, &t) in targets.iter().enumerate() {
        onehot[i * k + t] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, k), logits.device()).unwrap();
    let picked = logits.mul(&onehot).unwrap().sum_keepdim(1).unwrap();
    (lse.sub(&picked).unwrap().sum_all().unwrap() / n as f64).unwrap()
}

#[test]
fn parameters_follow_the_reference_order_and_groups() {
    let net = tiny_search();
    let gold = load("tiny_search_step.json");
    let trainable: Vec<String> =
        net.params().iter().filter(|p| p.group != ParamGroup::Buffer).map(|p| p.name.clone()).collect();
    let want: Vec<String> =
        gold["parameters"].as_array().unwrap().iter().map(|p| our_name(p["name"].as_str().unwrap())).collect();
    assert_eq!(trainable, want);
    let layers: Vec<&str> = net.searchable_layers().iter().map(|l| l.name.as_str()).collect();
    let want_layers: Vec<&str> =
        gold["searchable_layers_in_order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(layers, want_layers);
    assert_eq!(net.params().group(ParamGroup::Arch).len(), 10);
    assert_eq!(net.params().get("bn1.running_var").unwrap().group, ParamGroup::Buffer);
    // Initial logits are uniform: argmax ties go to the first index (a2/w1, D9).
    assert_eq!(net.chosen_bits().unwrap(), vec![(1, 2); 5]);
    assert_eq!(net.logits().unwrap()[0], (vec![0.01; 3], vec![0.01; 4]));
}

#[test]
fn forward_and_backward_match_the_reference_first_step() {
    let net = tiny_search();
    let gold = load("tiny_search_step.json");
    load_golden_params(&net, &gold["parameters"]);
    let x = candle_tensor(&gold["input"]["x"]);
    let targets: Vec<usize> = gold["target"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as usize).collect();
    let cd = gold["optim"]["cd"].as_f64().unwrap();
    let step = &gold["steps"][0];

    let f = net.forward(&x, true, &RelaxContext::default()).unwrap();
    let logits = host(&f.logits);
    for (a, b) in logits.iter().zip(f32s(&step["logits"]["data"])) {
        assert_rel("logit", *a as f64, b as f64, 1e-5);
    }
    for (out, c) in f.layer_outputs.iter().zip(step["layer_output_checksums"].as_array().unwrap()) {
        let v = host(out);
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let sumsq: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum();
        assert!((sum - c["out_sum"].as_f64().unwrap()).abs() < 1e-4, "{} sum {sum}", c["name"]);
        assert_rel("sumsq", sumsq, c["out_sumsq"].as_f64().unwrap(), 1e-5);
    }
    let ce = cross_entropy(&f.logits, &targets);
    assert_rel("ce", ce.to_scalar::<f32>().unwrap() as f64, step["ce"].as_f64().unwrap(), 1e-5);
    let complexity = BitOps::default().complexity(net.searchable_layers(), &f.dists).unwrap();
    assert_rel(
        "complexity",
        complexity.to_scalar::<f32>().unwrap() as f64,
        step["complexity_loss"].as_f64().unwrap(),
        1e-6,
    );
    let loss = ce.add(&(complexity * cd).unwrap()).unwrap();
    assert_rel("loss", loss.to_scalar::<f32>().unwrap() as f64, step["loss"].as_f64().unwrap(), 1e-5);

    let grads = loss.backward().unwrap();
    let pg = &step["param_grads"];
    let mut checked = 0;
    for p in net.params().iter().filter(|p| p.group == ParamGroup::Weight) {
        let key =
            gold["parameters"].as_array().unwrap().iter().find(|g| our_name(g["name"].as_str().unwrap()) == p.name);
        let key = key.unwrap()["name"].as_str().unwrap().to_string();
        let want = &pg[&key];
        let want = if want.is_object() { tensor(want).1 } else { f32s(want) };
        let got = host(grads.get(p.var.as_tensor()).unwrap());
        assert_close(&format!("grad {}", p.name), &got, &want, 1e-5);
        checked += 1;
    }
    assert!(checked > 20);
    for (i, m) in net.searchable_layers().iter().enumerate() {
        let a = &net.params().get(&format!("{}.alpha_activ", m.name)).unwrap().var;
        let w = &net.params().get(&format!("{}.alpha_weight", m.name)).unwrap().var;
        assert_close(
            "grad alpha_activ",
            &host(grads.get(a.as_tensor()).unwrap()),
            &f32s(&step["grad_alpha_activ"][i]),
            1e-6,
        );
        assert_close(
            "grad alpha_weight",
            &host(grads.get(w.as_tensor()).unwrap()),
            &f32s(&step["grad_alpha_weight"][i]),
            1e-6,
        );
    }
    // Running statistics moved (train mode), and eval mode uses them.
    let rv = host(net.params().get("bn1.running_var").unwrap().var.as_tensor());
    assert!(rv.iter().all(|&v| v != 1.0));
    let e = net.forward(&x, false, &RelaxContext::default()).unwrap();
    assert_eq!(e.logits.dims(), &[2, 10]);
    assert!(host(&e.logits).iter().zip(&logits).any(|(a, b)| a != b));
}

#[test]
fn fixed_and_full_precision_modes_run_forward_and_backward() {
    edmips::link_builtins();
    let dev = Device::Cpu;
    let x = Tensor::from_vec(edmips::core::init::det_fill(2 * 3 * 16 * 16, 3, 1.0), (2, 3, 16, 16), &dev).unwrap();
    let arch = [(2, 3), (1, 2), (4, 4), (3, 32), (2, 2)];
    let cfg = registry::build_config(&edmips::PluginSpec::new("quanttiny_cfg")).unwrap();
    let net = build_network(&cfg, Some(&arch), &dev, 1).unwrap();
    assert_eq!(net.chosen_bits().unwrap(), arch.to_vec());
    assert!(net.logits().unwrap().is_empty());
    assert!(net.params().group(ParamGroup::Arch).is_empty());
    let f = net.forward(&x, true, &RelaxContext::default()).unwrap();
    assert!(f.dists.is_empty());
    assert_eq!(f.layer_outputs.len(), 5);
    let g = f.logits.sum_all().unwrap().backward().unwrap();
    for p in net.params().group(ParamGroup::Weight) {
        assert!(g.get(p.var.as_tensor()).is_some(), "no gradient for {}", p.name);
    }

    let mut fp = cfg.clone();
    fp.mode = edmips::core::QuantMode::FullPrecision;
    let net = build_network(&fp, None, &dev, 1).unwrap();
    assert_eq!(net.mode(), &LayerMode::FullPrecision);
    assert_eq!(net.chosen_bits().unwrap(), vec![(32, 32); 5]);
    let f = net.forward(&x, false, &RelaxContext::default()).unwrap();
    assert_eq!(f.logits.dims(), &[2, 10]);

    // The arch-file configuration without an architecture says what to pass.
    let e = build_network(&cfg, None, &dev, 1).unwrap_err().to_string();
    assert!(e.contains("needs an architecture file: pass --ac ARCH_FILE"), "{e}");
    // Unsupported bits name the layer.
    let e = build_network(&cfg, Some(&[(2, 3), (1, 2), (4, 4), (5, 2), (2, 2)]), &dev, 1).unwrap_err().to_string();
    assert!(e.contains("layer 3 `layer2.0.conv2`") && e.contains("weight bit width 5"), "{e}");
    let e = build_network(&cfg, Some(&[(2, 3)]), &dev, 1).unwrap_err().to_string();
    assert!(e.contains("1 layers") && e.contains("5 searchable layers"), "{e}");
}

#[test]
fn a_wrong_input_size_names_the_expected_size() {
    let net = tiny_search();
    let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let e = net.forward(&x, false, &RelaxContext::default()).unwrap_err().to_string();
    assert!(e.contains("[N, 3, 16, 16]") && e.contains("[1, 3, 32, 32]"), "{e}");
    let x = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward(&x, false, &RelaxContext::default()).is_err());
}

#[test]
fn arch_files_are_parsed_and_checked() {
    let net = tiny_search();
    let layers = net.searchable_layers();
    let p = Path::new("arch.json");
    let bits = vec![(2, 3), (1, 2), (4, 4), (3, 2), (2, 2)];
    // The object form round-trips.
    let text = arch_json(layers, &bits).to_string();
    assert_eq!(parse_arch(&text, p, layers).unwrap(), bits);
    // The plain list form.
    assert_eq!(parse_arch("[[2,3],[1,2],[4,4],[3,2],[2,2]]", p, layers).unwrap(), bits);
    // Wrong number of layers.
    let e = parse_arch("[[2,3],[1,2]]", p, layers).unwrap_err().to_string();
    assert!(e.contains("arch.json") && e.contains("expected 5") && e.contains("found 2"), "{e}");
    // Malformed entries name the entry and what was expected.
    let e = parse_arch("[[2,3],[1],[4,4],[3,2],[2,2]]", p, layers).unwrap_err().to_string();
    assert!(e.contains("entry 1") && e.contains("[wbit, abit]"), "{e}");
    let e =
        parse_arch(r#"{"layers":[{"name":"layer1.0.conv1","wbit":"x","abit":2}]}"#, p, layers).unwrap_err().to_string();
    assert!(e.contains("entry 0") && e.contains("`wbit` must be a positive integer"), "{e}");
    let e =
        parse_arch(r#"{"layers":[{"name":"layer1.0.conv2","wbit":2,"abit":2}]}"#, p, layers).unwrap_err().to_string();
    assert!(e.contains("entry 0 is named `layer1.0.conv2`") && e.contains("`layer1.0.conv1`"), "{e}");
    assert!(parse_arch("{not json", p, layers).unwrap_err().to_string().contains("not valid JSON"));
    // Unsupported bits name the layer.
    let e =
        check_arch_bits(p, layers, &[(2, 3), (1, 2), (4, 4), (3, 2), (2, 7)], &Hwgq, &Gauss).unwrap_err().to_string();
    assert!(e.contains("layer 4 `layer2.0.downsample.0`") && e.contains("activation bit width 7"), "{e}");
    // Unreadable file.
    let e = load_arch_file(Path::new("/nonexistent/arch.json"), layers).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/arch.json") && e.contains("cannot read"), "{e}");
}
