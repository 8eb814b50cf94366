//! Parity of the four ImageNet backbones with the reference's complexity data
//! (`{resnet18,resnet50,googlenet,inception_v3}_complexity.json`): per-layer sizes, the
//! complexity loss and its gradient at the default and random logits, `fetch_best_arch`, the
//! `*_cfg` arch from a checkpoint, and the `quant*_2w2a` / `quant*_pretrained_cfg` BitOps.

mod common;

use common::*;
use edmips::core::candle::{Device, Tensor};
use edmips::core::graph::{build_network, declare_graph, resolve_mode, LayerMode, Network};
use edmips::core::LayerBits;
use edmips::plugins::BitOps;
use edmips::{registry, ComplexityCost, PluginSpec, RelaxContext};
use serde_json::Value;

fn config(name: &str) -> edmips::ModelConfig {
    edmips::link_builtins();
    *registry::build_config(&PluginSpec::new(name)).unwrap()
}

/// Complexity loss through the cost plugin over the network's relaxed distributions, and its
/// gradient per layer `(d alpha_activ, d alpha_weight)`.
#[allow(clippy::type_complexity)]
fn complexity(net: &Network) -> (f64, Vec<(Vec<f32>, Vec<f32>)>) {
    let dists = net.distributions(&RelaxContext::default()).unwrap();
    let c = BitOps::default().complexity(net.searchable_layers(), &dists).unwrap();
    let grads = c.backward().unwrap();
    let g = net
        .searchable_layers()
        .iter()
        .map(|l| {
            let get = |k: &str| {
                let v = &net.params().get(&format!("{}.{k}", l.name)).unwrap().var;
                host(grads.get(v.as_tensor()).unwrap())
            };
            (get("alpha_activ"), get("alpha_weight"))
        })
        .collect();
    (c.to_scalar::<f32>().unwrap() as f64, g)
}

fn set_logits(net: &Network, gold: &Value) {
    for (i, l) in net.searchable_layers().iter().enumerate() {
        for key in ["alpha_activ", "alpha_weight"] {
            let v = &net.params().get(&format!("{}.{key}", l.name)).unwrap().var;
            let data = f32s(&gold[key][i]);
            v.set(&Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
}

fn close_grad(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(want) {
        let tol = 1e-4 + 1e-5 * (*b as f64).abs();
        assert!(((*a - *b) as f64).abs() <= tol, "{what}: {a} vs {b}");
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The expected bits `(E[w], E[a])` per layer at the network's current logits.
fn expected_bits(net: &Network) -> Vec<LayerBits> {
    net.distributions(&RelaxContext::default())
        .unwrap()
        .iter()
        .map(|(a, w)| LayerBits {
            abit: a.expected().unwrap().to_scalar::<f32>().unwrap() as f64,
            wbit: w.expected().unwrap().to_scalar::<f32>().unwrap() as f64,
        })
        .collect()
}

fn bits(pairs: &[(u32, u32)]) -> Vec<LayerBits> {
    pairs.iter().map(|&(w, a)| LayerBits { wbit: w as f64, abit: a as f64 }).collect()
}

fn check_network(file: &str, prefix: &str) {
    let gold = load(file);
    let mix = config(&format!("mix{prefix}_w1234a234"));
    let graph = declare_graph(&mix).unwrap();
    let layers = graph.searchable_layers();

    // Per-layer sizes and shapes.
    let gl = gold["layers"].as_array().unwrap();
    assert_eq!(layers.len(), gl.len(), "{file}: layer count");
    assert_eq!(layers.len(), gold["num_layers"].as_u64().unwrap() as usize);
    for (l, g) in layers.iter().zip(gl) {
        assert_eq!(l.name, g["name"].as_str().unwrap(), "{file}: layer {} name", l.index);
        assert_eq!(l.size_product(), g["size_product"].as_f64().unwrap() as f32, "{}: size_product", l.name);
        assert_eq!(l.memory_size(), g["memory_size"].as_f64().unwrap() as f32, "{}: memory_size", l.name);
        assert_eq!(l.param_size() as f32, g["param_size"].as_f64().unwrap() as f32, "{}: param_size", l.name);
        assert_eq!(l.in_channels as u64, g["in_channels"].as_u64().unwrap(), "{}", l.name);
        assert_eq!(l.out_channels as u64, g["out_channels"].as_u64().unwrap(), "{}", l.name);
        let k = u32s(&g["kernel_size"]);
        assert_eq!((l.kernel.0 as u32, l.kernel.1 as u32), (k[0], k[1]), "{}: kernel", l.name);
        let s = u32s(&g["stride"]);
        assert_eq!((l.stride.0 as u32, l.stride.1 as u32), (s[0], s[1]), "{}: stride", l.name);
        let p = u32s(&g["padding"]);
        assert_eq!((l.padding[0] as u32, l.padding[2] as u32), (p[0], p[1]), "{}: padding", l.name);
        let i = u32s(&g["input_shape"]);
        assert_eq!((l.input_hw.0 as u32, l.input_hw.1 as u32), (i[2], i[3]), "{}: input", l.name);
        let o = u32s(&g["output_shape"]);
        assert_eq!((l.output_hw.0 as u32, l.output_hw.1 as u32), (o[2], o[3]), "{}: output", l.name);
    }
    let sp_total: f64 = layers.iter().map(|l| l.size_product() as f64).sum();
    assert_rel("size_product_total", sp_total, gold["size_product_total"].as_f64().unwrap(), 1e-9);
    assert_eq!(BitOps::default().normalizer(layers), gold["complexity_normalizer"].as_f64().unwrap());

    // The search network at the default and random logits.
    let net = build_network(&mix, None, &Device::Cpu, 0).unwrap();
    for (case, set) in [("default_alphas", false), ("random_alphas", true)] {
        let g = &gold[case];
        if set {
            set_logits(&net, g);
        }
        let (c, grads) = complexity(&net);
        assert_rel(&format!("{file} {case} complexity_loss"), c, g["complexity_loss"].as_f64().unwrap(), 1e-6);
        for (i, (ga, gw)) in grads.iter().enumerate() {
            close_grad(&format!("{file} {case} layer {i} d alpha_activ"), ga, &f32s(&g["grad_alpha_activ"][i]));
            close_grad(&format!("{file} {case} layer {i} d alpha_weight"), gw, &f32s(&g["grad_alpha_weight"][i]));
        }
        // fetch_best_arch: argmax (first on ties) and expected values.
        let fb = &g["fetch_best_arch"];
        let chosen = net.chosen_bits().unwrap();
        assert_eq!(chosen.iter().map(|c| c.1).collect::<Vec<_>>(), u32s(&fb["best_abits"]), "{file} {case}");
        assert_eq!(chosen.iter().map(|c| c.0).collect::<Vec<_>>(), u32s(&fb["best_wbits"]), "{file} {case}");
        let logits = net.logits().unwrap();
        let relax = net.relaxation();
        let ai: Vec<u32> = logits.iter().map(|(a, _)| relax.pick(a) as u32).collect();
        let wi: Vec<u32> = logits.iter().map(|(_, w)| relax.pick(w) as u32).collect();
        assert_eq!(ai, u32s(&fb["best_activ_idx"]));
        assert_eq!(wi, u32s(&fb["best_weight_idx"]));
        let t = BitOps::totals(layers, &bits(&chosen));
        assert_rel("bitops", t.bitops, fb["bitops"].as_f64().unwrap(), 1e-9);
        assert_rel("bita", t.bita, fb["bita"].as_f64().unwrap(), 1e-9);
        assert_rel("bitw", t.bitw, fb["bitw"].as_f64().unwrap(), 1e-9);
        assert_rel("bit (argmax)", t.normalized_bit(), fb["bits_normalized_argmax"].as_f64().unwrap(), 1e-9);
        let e = BitOps::totals(layers, &expected_bits(&net));
        assert_rel("mixbitops", e.bitops, fb["mixbitops"].as_f64().unwrap(), 1e-6);
        assert_rel("mixbita", e.bita, fb["mixbita"].as_f64().unwrap(), 1e-6);
        assert_rel("mixbitw", e.bitw, fb["mixbitw"].as_f64().unwrap(), 1e-6);
        assert_rel("bit (expected)", e.normalized_bit(), fb["bits_normalized_expected"].as_f64().unwrap(), 1e-6);
        if set {
            // The `*_cfg` model built from a checkpoint with these logits.
            let cfg_layers = g["cfg_model_layers_from_checkpoint"].as_array().unwrap();
            assert_eq!(cfg_layers.len(), chosen.len());
            for ((l, &(w, a)), c) in layers.iter().zip(&chosen).zip(cfg_layers) {
                assert_eq!(l.name, c["name"].as_str().unwrap());
                assert_eq!(
                    (w as u64, a as u64),
                    (c["wbit"].as_u64().unwrap(), c["abit"].as_u64().unwrap()),
                    "{}",
                    l.name
                );
            }
            // And through the quant*_cfg configuration fed with that architecture.
            let qcfg = config(&format!("quant{prefix}_cfg"));
            let mode = resolve_mode(&qcfg, "quant_cfg", layers, Some(&chosen)).unwrap();
            assert_eq!(mode, LayerMode::Fixed(chosen.clone()));
        }
    }

    // The fixed configurations.
    for (name, fc) in gold["fixed_configs"].as_object().unwrap() {
        let cfg = config(name);
        let LayerMode::Fixed(pairs) = resolve_mode(&cfg, name, layers, None).unwrap() else {
            panic!("{name}: not fixed")
        };
        assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), u32s(&fc["wbits"]), "{name} wbits");
        assert_eq!(pairs.iter().map(|p| p.1).collect::<Vec<_>>(), u32s(&fc["abits"]), "{name} abits");
        let t = BitOps::totals(layers, &bits(&pairs));
        assert_rel(&format!("{name} bitops"), t.bitops, fc["bitops"].as_f64().unwrap(), 1e-9);
        assert_rel(&format!("{name} bita"), t.bita, fc["bita"].as_f64().unwrap(), 1e-9);
        assert_rel(&format!("{name} bitw"), t.bitw, fc["bitw"].as_f64().unwrap(), 1e-9);
        assert_rel(&format!("{name} bit"), t.normalized_bit(), fc["bits_normalized"].as_f64().unwrap(), 1e-9);
    }
}

#[test]
fn resnet18_matches_the_reference_complexity() {
    check_network("resnet18_complexity.json", "res18");
}

#[test]
fn resnet50_matches_the_reference_complexity() {
    check_network("resnet50_complexity.json", "res50");
}

#[test]
fn googlenet_matches_the_reference_complexity() {
    check_network("googlenet_complexity.json", "google");
}

#[test]
fn inception_v3_matches_the_reference_complexity() {
    check_network("inception_v3_complexity.json", "inception");
}

#[test]
fn pretrained_configurations_reproduce_the_readme_bits() {
    for (name, want) in [
        ("quantres18_pretrained_cfg", 1.992),
        ("quantres50_pretrained_cfg", 2.007),
        ("quantgoogle_pretrained_cfg", 1.994),
        ("quantinception_pretrained_cfg", 1.982),
    ] {
        let cfg = config(name);
        let g = declare_graph(&cfg).unwrap();
        let LayerMode::Fixed(p) = resolve_mode(&cfg, name, g.searchable_layers(), None).unwrap() else { panic!() };
        let bit = BitOps::totals(g.searchable_layers(), &bits(&p)).normalized_bit();
        assert!((bit - want).abs() < 5e-4, "{name}: {bit}");
    }
}

#[test]
fn every_named_configuration_resolves() {
    edmips::link_builtins();
    let names: Vec<String> = registry::configs().unwrap().iter().map(|e| e.id.to_string()).collect();
    assert_eq!(names.len(), 32, "{names:?}");
    for n in &names {
        let cfg = config(n);
        let g = declare_graph(&cfg).unwrap_or_else(|e| panic!("{n}: {e}"));
        let arch = vec![(2, 2); g.searchable_layers().len()];
        resolve_mode(&cfg, n, g.searchable_layers(), Some(&arch)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}
