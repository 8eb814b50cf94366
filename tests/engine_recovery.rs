//! Crash safety of a run folder beyond the checkpoint, and the identity a checkpoint records:
//! after a crash between the checkpoint and the files an epoch owes, a resume rewrites them and
//! drops log lines of the lost work; a mid-epoch resume reports the whole epoch's metrics; a
//! checkpoint refuses other bits or other data; a non-finite model never becomes `best`.

mod common;

use common::{run_opts, tmp_dir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edmips::core::candle::{Device, Tensor};
use edmips::engine::checkpoint;
use edmips::engine::metrics::read_history;
use edmips::engine::{run, RunConfig, RunKind, RunOptions};

fn cfg(name: &str, epochs: usize) -> RunConfig {
    edmips::link_builtins();
    let mut c = RunConfig::named(name).unwrap();
    c.model.num_classes = 10;
    let t = &mut c.train;
    t.epochs = epochs;
    t.batch_size = 16;
    t.workers = 2;
    t.step_epoch = 1;
    t.print_freq = 1;
    t.max_steps_per_epoch = Some(4);
    t.max_val_batches = Some(2);
    t.complexity_decay = 0.05;
    t.seed = 5;
    c
}

fn opts(out: &Path, resume: Option<PathBuf>) -> RunOptions {
    run_opts(out, resume, false)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(String::from).collect()
}

#[test]
fn a_resume_after_a_crash_rewrites_what_the_epoch_owes_and_drops_lost_log_lines() {
    let c = || cfg("mixtiny_w1234a234", 2);
    let a = tmp_dir("recovery-reference");
    run(RunKind::Search, c(), opts(&a, None)).unwrap();

    // The same run, "crashed" right after writing epoch 1's checkpoint: the log already holds
    // lines of epoch 2 that the checkpoint never saw, the per-epoch files are missing or stale,
    // and an atomic write left its temporary file.
    let b = tmp_dir("recovery-crashed");
    run(RunKind::Search, cfg("mixtiny_w1234a234", 1), opts(&b, None)).unwrap();
    let mut log = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    log += "{\"kind\":\"step\",\"epoch\":1,\"step\":1,\"global_step\":5,\"ce\":9.0}\n{\"kind\":\"epoch\",\"epoch\":1,";
    std::fs::write(b.join("metrics.jsonl"), log).unwrap();
    for f in ["arch.json", "best.safetensors", "checkpoint_ep1.safetensors", "arch.svg"] {
        std::fs::remove_file(b.join(f)).unwrap();
    }
    std::fs::write(b.join(".best.safetensors.tmp-4242"), b"half").unwrap();

    let ck = b.join("checkpoint.safetensors");
    let s = run(RunKind::Search, cfg("mixtiny_w1234a234", 1), opts(&b, Some(ck.clone()))).unwrap();
    assert!(s.already_finished, "a resume of a finished run says so");
    for f in ["arch.json", "best.safetensors", "checkpoint_ep1.safetensors", "arch.svg"] {
        assert!(b.join(f).is_file(), "{f} is written again");
    }
    assert!(!b.join(".best.safetensors.tmp-4242").exists(), "stray temporary files are removed");
    assert_eq!(checkpoint::read_state(&b.join("best.safetensors")).unwrap().epoch, 1);
    assert!(!lines(&b.join("metrics.jsonl")).iter().any(|l| l.contains("\"global_step\":5,\"ce\":9.0")));

    run(RunKind::Search, c(), opts(&b, Some(ck))).unwrap();
    let kinds = |p: &Path| -> Vec<(String, u64)> {
        lines(&p.join("metrics.jsonl"))
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["kind"].as_str().unwrap().to_string(), v["global_step"].as_u64().unwrap_or(0)))
            .collect()
    };
    assert_eq!(kinds(&a), kinds(&b), "the log holds each step and epoch once, as an uninterrupted run's");
    assert_eq!(read_history(&a.join("metrics.jsonl")).len(), 2);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_mid_epoch_resume_reports_the_whole_epochs_train_metrics() {
    let a = tmp_dir("recovery-whole");
    run(RunKind::Search, cfg("mixtiny_w1234a234", 1), opts(&a, None)).unwrap();
    let c = tmp_dir("recovery-interrupted");
    let o = run_opts(&c, None, true);
    assert!(run(RunKind::Search, cfg("mixtiny_w1234a234", 1), o).unwrap().interrupted);
    let ck = checkpoint::read_state(&c.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.step_in_epoch, ck.partial.ce.count()), (1, 16.0), "the checkpoint carries the epoch's sums");
    run(RunKind::Search, cfg("mixtiny_w1234a234", 1), opts(&c, Some(c.join("checkpoint.safetensors")))).unwrap();
    let (ha, hc) = (read_history(&a.join("metrics.jsonl")), read_history(&c.join("metrics.jsonl")));
    assert_eq!(hc.len(), 1);
    assert_eq!(
        (ha[0].train_ce.to_bits(), ha[0].train_top1.to_bits(), ha[0].complexity.to_bits()),
        (hc[0].train_ce.to_bits(), hc[0].train_top1.to_bits(), hc[0].complexity.to_bits()),
        "the resumed epoch reports all four steps, not the three after the resume"
    );
    for d in [a, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_checkpoint_refuses_other_bits_and_other_data() {
    let d = tmp_dir("recovery-bits");
    let (ac1, ac2) = (d.join("a1.json"), d.join("a2.json"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(&ac1, "[[2, 2], [2, 3], [3, 3], [4, 2], [1, 4]]").unwrap();
    std::fs::write(&ac2, "[[2, 2], [2, 3], [3, 3], [4, 2], [2, 4]]").unwrap();
    let out = d.join("run");
    let mut o = opts(&out, None);
    o.arch_file = Some(ac1.clone());
    run(RunKind::Train, cfg("quanttiny_cfg", 1), o).unwrap();
    let ck = out.join("checkpoint.safetensors");
    for evaluate in [false, true] {
        let mut o = opts(&out, Some(ck.clone()));
        o.arch_file = Some(ac2.clone());
        o.evaluate = evaluate;
        let e = run(RunKind::Train, cfg("quanttiny_cfg", 2), o).unwrap_err().to_string();
        assert!(e.contains("other bits or data") && e.contains("w1a4 -> w2a4"), "evaluate={evaluate}: {e}");
    }
    // Other data: a checkpoint made on the embedded set, resumed on a folder with other classes.
    let data = d.join("data");
    for split in ["train", "val"] {
        for k in 0..10 {
            let dir = data.join(split).join(format!("class{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut b = b"P6\n4 4\n255\n".to_vec();
            b.extend(std::iter::repeat_n(k as u8 * 20, 48));
            std::fs::write(dir.join("0.ppm"), b).unwrap();
        }
    }
    let mut c = cfg("quanttiny_cfg", 2);
    c.data.path = Some(data);
    let mut o = opts(&out, Some(ck));
    o.arch_file = Some(ac1);
    let e = run(RunKind::Train, c, o).unwrap_err().to_string();
    assert!(e.contains("data classes:") && e.contains("data train images: 4000 -> 10"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn non_finite_values_outside_the_loss_stop_the_run_and_never_become_best() {
    let d = tmp_dir("recovery-nan-val");
    run(RunKind::Search, cfg("mixtiny_w1234a234", 1), opts(&d, None)).unwrap();
    // An infinite running mean in the stem's batch norm: training (batch statistics) is fine;
    // evaluation carries +inf down the residual path into the classifier, where it becomes NaN.
    let ck_path = d.join("checkpoint.safetensors");
    let ck = checkpoint::load(&ck_path, &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = ck.tensors.into_iter().collect();
    for (name, t) in tensors.iter_mut() {
        if name == "bn1.running_mean" {
            *t = (t.ones_like().unwrap() * f64::NEG_INFINITY).unwrap();
        }
    }
    let momentum: Vec<(String, HashMap<String, Tensor>)> = ck.momentum.into_iter().collect();
    let groups: Vec<(&str, &HashMap<String, Tensor>)> = momentum.iter().map(|(g, m)| (g.as_str(), m)).collect();
    checkpoint::save(&ck_path, &ck.state, &ck.config, &tensors, &groups).unwrap();
    let best = std::fs::read(d.join("best.safetensors")).unwrap();
    let e = run(RunKind::Search, cfg("mixtiny_w1234a234", 2), opts(&d, Some(ck_path))).unwrap_err().to_string();
    // Caught by the end-of-epoch checks (validation loss or parameters), before any saving.
    assert!(e.contains("non-finite") && e.contains("bn1.running_mean") && e.contains("after epoch 2/2"), "{e}");
    assert_eq!(std::fs::read(d.join("best.safetensors")).unwrap(), best, "best holds only a finite model");
    std::fs::remove_dir_all(d).unwrap();
}
