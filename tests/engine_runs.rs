//! Whole runs through the engine on the embedded data: exact resume (at an epoch boundary and
//! mid-epoch after an interrupt), a non-finite loss, configuration mismatches, evaluation.

mod common;

use common::{run_opts, tmp_dir};
use std::collections::HashMap;
use std::path::Path;

use edmips::core::candle::{Device, Tensor};
use edmips::engine::checkpoint;
use edmips::engine::{run, RunConfig, RunKind};

fn cfg(epochs: usize) -> RunConfig {
    edmips::link_builtins();
    let mut c = RunConfig::named("mixtiny_w1234a234").unwrap();
    c.model.num_classes = 10;
    let t = &mut c.train;
    t.epochs = epochs;
    t.batch_size = 16;
    t.workers = 2;
    t.step_epoch = 1;
    t.max_steps_per_epoch = Some(4);
    t.max_val_batches = Some(2);
    t.complexity_decay = 0.05;
    t.seed = 3;
    c
}

fn tensors(path: &Path) -> (HashMap<String, Vec<f32>>, usize) {
    let ck = checkpoint::load(path, &Device::Cpu).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut m: HashMap<String, Vec<f32>> = ck.tensors.iter().map(|(k, t)| (k.clone(), flat(t))).collect();
    for (g, bufs) in &ck.momentum {
        for (k, t) in bufs {
            m.insert(format!("optim.{g}.{k}"), flat(t));
        }
    }
    (m, ck.state.epoch)
}

fn assert_bitwise(a: &Path, b: &Path) {
    let (ta, ea) = tensors(a);
    let (tb, eb) = tensors(b);
    assert_eq!(ea, eb);
    assert_eq!(ta.len(), tb.len());
    assert!(ta.keys().any(|k| k.starts_with("optim.arch.")), "momentum buffers are saved");
    for (k, va) in &ta {
        let vb = &tb[k];
        let same = va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "tensor {k} differs between the runs");
    }
}

#[test]
fn resume_is_bitwise_exact_at_epoch_boundaries_and_mid_epoch() {
    // Reference: 2 epochs in one run.
    let a = tmp_dir("engine-a");
    let s = run(RunKind::Search, cfg(2), run_opts(&a, None, false)).unwrap();
    assert_eq!(s.epochs_done, 2);
    for f in [
        "checkpoint.safetensors",
        "best.safetensors",
        "checkpoint_ep1.safetensors",
        "checkpoint_ep2.safetensors",
        "arch.json",
        "metrics.jsonl",
        "curves.svg",
        "arch.svg",
        "config.resolved.toml",
    ] {
        assert!(a.join(f).is_file(), "{f} written");
    }

    // 1 epoch, then resume for the second.
    let b = tmp_dir("engine-b");
    run(RunKind::Search, cfg(1), run_opts(&b, None, false)).unwrap();
    let s = run(RunKind::Search, cfg(2), run_opts(&b, Some(b.join("checkpoint.safetensors")), false)).unwrap();
    assert_eq!(s.epochs_done, 2);
    assert_bitwise(&a.join("checkpoint.safetensors"), &b.join("checkpoint.safetensors"));

    // Interrupted after the first step (the flag is already set), then resumed mid-epoch.
    let c = tmp_dir("engine-c");
    let s = run(RunKind::Search, cfg(2), run_opts(&c, None, true)).unwrap();
    assert!(s.interrupted);
    let ck = checkpoint::load(&c.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    assert_eq!((ck.state.epoch, ck.state.step_in_epoch), (0, 1));
    let s = run(RunKind::Search, cfg(2), run_opts(&c, Some(c.join("checkpoint.safetensors")), false)).unwrap();
    assert!(!s.interrupted);
    assert_bitwise(&a.join("checkpoint.safetensors"), &c.join("checkpoint.safetensors"));

    // The arch report is the argmax of the logits, and train builds exactly that network.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("arch.json")).unwrap()).unwrap();
    let bits: Vec<(u64, u64)> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["wbit"].as_u64().unwrap(), l["abit"].as_u64().unwrap()))
        .collect();
    let mut tc = RunConfig::named("quanttiny_cfg").unwrap();
    tc.model.num_classes = 10;
    tc.train = cfg(1).train;
    let net = edmips::engine::trainer::build_run_network(&tc, Some(&a.join("arch.json")), &Device::Cpu).unwrap();
    let chosen: Vec<(u64, u64)> = net.chosen_bits().unwrap().into_iter().map(|(w, a)| (w as u64, a as u64)).collect();
    assert_eq!(chosen, bits);

    // Evaluation of a checkpoint.
    let mut o = run_opts(&a, Some(a.join("best.safetensors")), false);
    o.evaluate = true;
    let s = run(RunKind::Search, cfg(2), o).unwrap();
    let v = s.last_val.unwrap();
    assert!(v.images > 0 && (0.0..=100.0).contains(&v.top1));
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_resume_with_another_configuration_is_refused_with_the_differences() {
    let d = tmp_dir("engine-mismatch");
    run(RunKind::Search, cfg(1), run_opts(&d, None, false)).unwrap();
    let mut other = cfg(2);
    other.train.lr = 0.2;
    let e = run(RunKind::Search, other, run_opts(&d, Some(d.join("checkpoint.safetensors")), false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("different configuration") && e.contains("train.lr: 0.1 -> 0.2"), "{e}");
    let e = run(RunKind::Train, cfg(2), run_opts(&d, Some(d.join("checkpoint.safetensors")), false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("search configuration"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let d = tmp_dir("engine-nan");
    run(RunKind::Search, cfg(1), run_opts(&d, None, false)).unwrap();
    // A weight so large that the next forward overflows: the first step of epoch 2 is non-finite.
    let ck_path = d.join("checkpoint.safetensors");
    let ck = checkpoint::load(&ck_path, &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = ck.tensors.into_iter().collect();
    for (name, t) in tensors.iter_mut() {
        if name == "fc.weight" {
            *t = (t.clone() * 1e38).unwrap();
        }
    }
    let momentum: Vec<(String, HashMap<String, Tensor>)> = ck.momentum.into_iter().collect();
    let groups: Vec<(&str, &HashMap<String, Tensor>)> = momentum.iter().map(|(g, m)| (g.as_str(), m)).collect();
    checkpoint::save(&ck_path, &ck.state, &ck.config, &tensors, &groups).unwrap();
    let before = std::fs::read(&ck_path).unwrap();
    let e = run(RunKind::Search, cfg(2), run_opts(&d, Some(ck_path.clone()), false)).unwrap_err().to_string();
    assert!(e.contains("non-finite loss") && e.contains("epoch 2/2, step 1"), "{e}");
    assert_eq!(std::fs::read(&ck_path).unwrap(), before, "checkpoint untouched");
    std::fs::remove_dir_all(d).unwrap();
}
