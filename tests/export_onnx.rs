//! `edmips export`: the QONNX and plain ONNX files of retrained networks, checked by
//! independent runtimes, and the exporter's node layout and errors checked in Rust.
//!
//! The runtime checks (`tests/python/check_export.py`: onnx's checker and shape inference,
//! onnxruntime on the plain file, qonnx's executor on the QONNX file) need the Python
//! environment that `scripts/onnx-venv.sh` prepares; its python is `$EDMIPS_ONNX_PYTHON`.
//! Without it those parts are skipped with a message, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edmips::core::candle::Device;
use edmips::core::graph::{build_network, NodeOp};
use edmips::core::{registry, PluginSpec, QuantExport};
use edmips::data::{Loader, LoaderConfig};
use edmips::export::model::{AttrValue, Model, Node, TensorData};
use edmips::export::{export_model, load_retrained, ExportInput, Format};
use edmips::{Operand, RelaxContext};

fn edmips(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edmips")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edmips-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Python of `scripts/onnx-venv.sh`, or `None` (skipped, with a message) when
/// `$EDMIPS_ONNX_PYTHON` is unset; under `CI=true` a missing one fails the test.
fn python(test: &str) -> Option<PathBuf> {
    match std::env::var("EDMIPS_ONNX_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(PathBuf::from(p.trim())),
        _ => {
            let msg = format!(
                "{test}: the independent ONNX/QONNX runtime checks need EDMIPS_ONNX_PYTHON \
                 (run `export EDMIPS_ONNX_PYTHON=$(scripts/onnx-venv.sh | tail -n1)`)"
            );
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("{msg}; .ci/run sets it, so CI must not skip these checks");
            }
            eprintln!("SKIPPED {msg}");
            None
        }
    }
}

/// Runs `check_export.py` and returns its JSON result; panics with its output on a failure.
fn check(py: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_export.py");
    let o = Command::new(py).arg(&script).args(args).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "check_export.py {}:\n{out}", args[0]);
    let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("check_export.py printed no JSON ({e}):\n{out}"))
}

/// A float32 `.npy` file (format version 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// A mixed architecture for ResNet-20's 20 layers: every weight bit 1-4, activation bits
/// 2-4 and one full-precision activation (abit 32, ReLU).
fn mixed_resnet20_arch(path: &Path) {
    let bits: Vec<[u32; 2]> = (0..20).map(|i| if i == 4 { [2, 32] } else { [1 + (i % 4), 2 + (i * 7 % 3)] }).collect();
    std::fs::write(path, serde_json::to_string(&bits).unwrap()).unwrap();
}

/// Trains `config` (a ResNet-20 configuration with bits from an architecture file) with the
/// mixed architecture for a few steps (`data` `None`: the embedded Fashion-MNIST subset),
/// exports both formats, writes a batch of validation images and edmips's eval-mode logits,
/// and runs the independent checks.
fn end_to_end(name: &str, config: &str, data: Option<&Path>) {
    let root = tmp(name);
    let arch = root.join("arch.json");
    mixed_resnet20_arch(&arch);
    let run = root.join("run");
    let mut args = vec!["train", "-a", config, "--ac", arch.to_str().unwrap(), "--epochs", "1"];
    args.extend(["--max-steps", "3", "--max-val-batches", "1", "-b", "32", "-j", "2", "--out", run.to_str().unwrap()]);
    if let Some(d) = data {
        args.push(d.to_str().unwrap());
    }
    let o = edmips(&args);
    assert!(o.status.success(), "{}", text(&o));
    let ck = run.join("checkpoint.safetensors");
    let (q, p) = (root.join("model.qonnx"), root.join("model.onnx"));
    for (format, file) in [("qonnx", &q), ("onnx", &p)] {
        let o = edmips(
            &["export", "--resume", ck.to_str().unwrap(), "--ac", arch.to_str().unwrap()]
                .into_iter()
                .chain(["--format", format, "-b", "32", "--out", file.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        let t = text(&o);
        assert!(o.status.success() && t.contains("20 quantized convs"), "{t}");
    }

    // edmips's own eval-mode logits on a batch of validation images.
    let src = load_retrained(&ck, None, &Device::Cpu).unwrap();
    let dataset = edmips::engine::trainer::open_data(&src.config).unwrap();
    let cfg = LoaderConfig::new(src.net.graph().input.clone(), 32, false, 0);
    let batch = Loader::epoch(dataset.val.clone(), &cfg, 0, &Device::Cpu).unwrap().next().unwrap().unwrap();
    let logits = src.net.forward(&batch.images, false, &RelaxContext::eval()).unwrap().logits;
    let (x, y) = (root.join("x.npy"), root.join("logits.npy"));
    write_npy(&x, batch.images.dims(), &batch.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    write_npy(&y, logits.dims(), &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());

    if let Some(py) = python(name) {
        let args = ["run", "--qonnx", q.to_str().unwrap(), "--onnx", p.to_str().unwrap()];
        let r = check(&py, &[&args[..], &["--input", x.to_str().unwrap(), "--logits", y.to_str().unwrap()]].concat());
        println!("{name}: {r}");
        assert_eq!(r["quant_nodes"]["weight"], 20, "{r}");
        assert_eq!(r["quant_nodes"]["activation"], 19, "{r}"); // one layer has abit 32: a Relu
        assert_eq!(r["images"], 32, "{r}");
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn resnet20_on_the_embedded_data_matches_onnxruntime_and_qonnx() {
    end_to_end("embedded", "quantres20_cfg", None);
}

#[test]
fn resnet20_with_learned_lsq_steps_matches_onnxruntime_and_qonnx() {
    // LSQ's learned steps are the Quant nodes' scales (1-bit weights as the scale-2s grid).
    end_to_end("embedded-lsq", "quantres20_lsq_cfg", None);
}

#[test]
fn resnet20_on_a_small_cifar10_folder_matches_onnxruntime_and_qonnx() {
    let tarball = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10.tar.gz");
    if !tarball.is_file() {
        eprintln!("SKIPPED: {} is missing (the real CIFAR-10 of ../shared/data)", tarball.display());
        return;
    }
    // A small ImageFolder straight from the archive: 20 train and 10 val images per class.
    let small = tmp("cifar-small");
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&small)
        .args(["--wildcards", "train/*/00[01]?.jpg", "val/*/000?.jpg"])
        .status()
        .unwrap();
    assert!(st.success(), "unpacking part of {}", tarball.display());
    let count = |split: &str| std::fs::read_dir(small.join(split)).unwrap().count();
    assert_eq!((count("train"), count("val")), (10, 10), "ten classes in each split");
    end_to_end("cifar", "quantres20_cfg", Some(&small));
    std::fs::remove_dir_all(small).unwrap();
}

fn find<'a>(m: &'a Model, name: &str) -> &'a Node {
    m.graph.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node `{name}`"))
}

fn scalar(m: &Model, name: &str) -> f32 {
    let t = m.graph.initializers.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no initializer `{name}`"));
    match &t.data {
        TensorData::F32(v) if t.dims.is_empty() && v.len() == 1 => v[0],
        _ => panic!("`{name}` is not a float scalar"),
    }
}

fn count(m: &Model, op: &str) -> usize {
    m.graph.nodes.iter().filter(|n| n.op_type == op).count()
}

#[test]
fn one_quantized_conv_has_the_documented_node_layout() {
    edmips::link_builtins();
    let mut cfg = registry::build_config(&PluginSpec::new("quantres20_cfg")).unwrap();
    cfg.num_classes = 10;
    let bits: Vec<(u32, u32)> = (0..20).map(|i| if i == 0 { (3, 2) } else { (2, 4) }).collect();
    let net = build_network(&cfg, Some(&bits), &Device::Cpu, 1).unwrap();
    let (act, weight) = (
        registry::build_quantizer(&cfg.act_quantizer).unwrap(),
        registry::build_quantizer(&cfg.weight_quantizer).unwrap(),
    );
    let cost = registry::build_cost(&cfg.cost).unwrap();
    let input = ExportInput {
        net: &net,
        config_name: "quantres20_cfg",
        act_quantizer: act.as_ref(),
        weight_quantizer: weight.as_ref(),
        cost: cost.as_ref(),
    };
    let w = net.params().get("layer1.0.conv1.weight").unwrap().var.as_tensor().clone();
    let Some(QuantExport::Uniform(wq)) = weight.export_form(Operand::Weight, 3, Some(&w), &[]).unwrap() else {
        panic!("gauss is uniform");
    };
    let w_levels =
        weight.quantize(&w, Operand::Weight, 3, &[]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();

    // QONNX: bn0 -> Quant (act, a2) -> Conv <- Quant (weight, w3) <- Q(W).
    let q = export_model(&input, Format::Qonnx, Some(1)).unwrap().model;
    let aq = find(&q, "layer1.0.conv1.act_quant");
    let wqn = find(&q, "layer1.0.conv1.weight_quant");
    let conv = find(&q, "layer1.0.conv1");
    assert_eq!((aq.op_type.as_str(), aq.domain.as_str()), ("Quant", "qonnx.custom_op.general"));
    assert_eq!(aq.inputs[0], "layer1.0.bn0");
    assert_eq!(scalar(&q, &aq.inputs[1]), 0.538f64 as f32);
    assert_eq!((scalar(&q, &aq.inputs[2]), scalar(&q, &aq.inputs[3])), (0.0, 2.0));
    let attrs: Vec<(&str, &AttrValue)> = aq.attributes.iter().map(|a| (a.name.as_str(), &a.value)).collect();
    assert_eq!(
        attrs,
        [
            ("signed", &AttrValue::Int(0)),
            ("narrow", &AttrValue::Int(0)),
            ("rounding_mode", &AttrValue::String("ROUND".into()))
        ]
    );
    assert_eq!(wqn.inputs[0], "layer1.0.conv1.weight");
    assert_eq!(scalar(&q, &wqn.inputs[1]), wq.scale);
    assert_eq!((scalar(&q, &wqn.inputs[2]), scalar(&q, &wqn.inputs[3])), (3.5, 3.0));
    let stored = q.graph.initializers.iter().find(|t| t.name == "layer1.0.conv1.weight").unwrap();
    assert_eq!(stored.data, TensorData::F32(w_levels.clone()), "the initializer holds Q(W)");
    assert_eq!(conv.inputs, ["layer1.0.conv1.act_quant", "layer1.0.conv1.weight_quant"]);
    assert_eq!(conv.attributes[2].value, AttrValue::Ints(vec![1, 1, 1, 1]));
    assert_eq!((count(&q, "Quant"), count(&q, "Conv")), (40, 21));

    // ONNX: bn0 -> Div -> Clip -> Round -> Mul -> Conv <- Q(W); no zero point for HWGQ.
    let o = export_model(&input, Format::Onnx, None).unwrap().model;
    let chain = ["div", "clip", "round"].map(|s| find(&o, &format!("layer1.0.conv1.act_quant.{s}")).op_type.clone());
    assert_eq!(chain, ["Div", "Clip", "Round"]);
    let clip = find(&o, "layer1.0.conv1.act_quant.clip");
    assert_eq!((scalar(&o, &clip.inputs[1]), scalar(&o, &clip.inputs[2])), (0.0, 3.0));
    assert_eq!(find(&o, "layer1.0.conv1.act_quant").op_type, "Mul");
    assert_eq!(find(&o, "layer1.0.conv1").inputs, ["layer1.0.conv1.act_quant", "layer1.0.conv1.weight"]);
    let stored = o.graph.initializers.iter().find(|t| t.name == "layer1.0.conv1.weight").unwrap();
    assert_eq!(stored.data, TensorData::F32(w_levels));
    assert_eq!((count(&o, "Quant"), count(&o, "Round"), count(&o, "Add") - count(&q, "Add")), (0, 20, 0));
    assert!(o.metadata.iter().any(|(k, v)| k == "edmips.layers" && v.contains("\"wbit\":3")));
}

#[test]
fn a_quantizer_without_an_export_form_is_an_error_naming_it() {
    edmips::link_builtins();
    let mut cfg = registry::build_config(&PluginSpec::new("quantres20_2w2a")).unwrap();
    cfg.weight_quantizer = PluginSpec::new("dorefa");
    let net = build_network(&cfg, None, &Device::Cpu, 1).unwrap();
    let act = registry::build_quantizer(&cfg.act_quantizer).unwrap();
    let weight = registry::build_quantizer(&cfg.weight_quantizer).unwrap();
    let cost = registry::build_cost(&cfg.cost).unwrap();
    let input = ExportInput {
        net: &net,
        config_name: "x",
        act_quantizer: act.as_ref(),
        weight_quantizer: weight.as_ref(),
        cost: cost.as_ref(),
    };
    let e = export_model(&input, Format::Onnx, None).unwrap_err().to_string();
    assert!(e.contains("`dorefa`") && e.contains("layer1.0.conv1") && e.contains("export_form"), "{e}");
}

#[test]
fn search_checkpoints_and_other_architectures_are_refused() {
    let root = tmp("refuse");
    let search = root.join("search");
    let o = edmips(
        &["search", "-a", "mixtiny_w1234a234", "--epochs", "1", "--max-steps", "1", "--max-val-batches", "1"]
            .into_iter()
            .chain(["-b", "8", "--out", search.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = root.join("m.onnx");
    let ck = search.join("checkpoint.safetensors");
    let o = edmips(&["export", "--resume", ck.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("search run") && t.contains("edmips train"), "{t}");

    let arch = root.join("arch.json");
    mixed_resnet20_arch(&arch);
    let train = root.join("train");
    let o = edmips(
        &["train", "-a", "quantres20_cfg", "--ac", arch.to_str().unwrap(), "--epochs", "1"]
            .into_iter()
            .chain(["--max-steps", "1", "--max-val-batches", "1", "-b", "8", "--out", train.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let other = root.join("other.json");
    let mut bits: Vec<[u32; 2]> = serde_json::from_str(&std::fs::read_to_string(&arch).unwrap()).unwrap();
    bits[7] = [4, 4];
    std::fs::write(&other, serde_json::to_string(&bits).unwrap()).unwrap();
    let ck = train.join("checkpoint.safetensors");
    let o = edmips(&[
        "export",
        "--resume",
        ck.to_str().unwrap(),
        "--ac",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("does not match") && t.contains("layer 7 `layer2.0.conv2`"), "{t}");
    assert!(!out.exists(), "nothing is written on an error");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn resnet18_exports_with_the_expected_graph_shapes() {
    edmips::link_builtins();
    let cfg = registry::build_config(&PluginSpec::new("quantres18_pretrained_cfg")).unwrap();
    let net = build_network(&cfg, None, &Device::Cpu, 2).unwrap();
    let bits = net.chosen_bits().unwrap();
    let act = registry::build_quantizer(&cfg.act_quantizer).unwrap();
    let weight = registry::build_quantizer(&cfg.weight_quantizer).unwrap();
    let cost = registry::build_cost(&cfg.cost).unwrap();
    let input = ExportInput {
        net: &net,
        config_name: "quantres18_pretrained_cfg",
        act_quantizer: act.as_ref(),
        weight_quantizer: weight.as_ref(),
        cost: cost.as_ref(),
    };
    let root = tmp("resnet18");
    let mut expect = serde_json::Map::new();
    let graph = net.graph();
    for node in &graph.nodes {
        if let NodeOp::QuantConv { layer, .. } = node.op {
            let (c, h, w) = node.shape;
            expect.insert(graph.searchable[layer].name.clone(), serde_json::json!([c, h, w]));
        }
    }
    expect.insert("logits".into(), serde_json::json!([graph.num_classes]));
    let bns = graph.nodes.iter().filter(|n| matches!(n.op, NodeOp::BatchNorm { .. })).count();
    let mut files = vec![];
    for format in [Format::Qonnx, Format::Onnx] {
        let ex = export_model(&input, format, None).unwrap();
        let m = &ex.model;
        assert_eq!(ex.layers.len(), 19);
        assert_eq!(ex.layers.iter().map(|l| (l.wbit, l.abit)).collect::<Vec<_>>(), bits);
        assert_eq!((count(m, "Conv"), count(m, "BatchNormalization"), count(m, "Gemm")), (20, bns, 1));
        assert_eq!(count(m, "MaxPool"), 1);
        if format == Format::Qonnx {
            assert_eq!(count(m, "Quant"), 38);
            for l in &ex.layers {
                let wq = find(m, &format!("{}.weight_quant", l.name));
                assert_eq!(scalar(m, &wq.inputs[3]), l.wbit as f32, "{}", l.name);
                let aq = find(m, &format!("{}.act_quant", l.name));
                assert_eq!(scalar(m, &aq.inputs[3]), l.abit as f32, "{}", l.name);
            }
        } else {
            assert_eq!((count(m, "Quant"), count(m, "Round"), count(m, "Clip")), (0, 19, 19));
        }
        let conv1 = find(m, "conv1");
        assert_eq!(conv1.attributes[0].value, AttrValue::Ints(vec![7, 7]));
        let file = root.join(format!("resnet18.{}", format.name()));
        edmips::export::write_model(m, &file).unwrap();
        files.push(file);
    }
    let shapes = root.join("shapes.json");
    std::fs::write(&shapes, serde_json::Value::Object(expect).to_string()).unwrap();
    if let Some(py) = python("resnet18") {
        let r = check(
            &py,
            &[
                "shapes",
                "--qonnx",
                files[0].to_str().unwrap(),
                "--onnx",
                files[1].to_str().unwrap(),
                "--expect",
                shapes.to_str().unwrap(),
            ],
        );
        println!("resnet18: {r}");
        assert_eq!(r["onnx"]["values_checked"], 20, "{r}");
        assert_eq!(r["qonnx_ops"]["Quant"], 38, "{r}");
    }
    std::fs::remove_dir_all(root).unwrap();
}
