//! The CIFAR-10 experiment's regression guard: `experiments/cifar10/sweep.toml` runs end to end
//! in a smoke-size mode (`edmips sweep --set ...`, a few steps per run), on the embedded data
//! and on the real CIFAR-10 archive in `../shared/data`, and produces every figure that
//! `experiments/cifar10/RESULTS.md` is built from: one row per arm and seed, both arms with
//! both seeds, the searched architectures at the 2.0-bit budget, BitOps under both stem
//! conventions, the per-arm summary, the Pareto plot and each search's `arch.svg`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::TempDir;

const SWEEP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/cifar10/sweep.toml");

/// Runs the experiment's sweep file at smoke size into `out`; returns its summary.
fn tiny_sweep(data: Option<&Path>, out: &Path) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edmips"));
    cmd.arg("sweep").arg(SWEEP);
    if let Some(d) = data {
        cmd.arg(d);
    }
    cmd.arg("--out").arg(out).args(["-j", "1"]);
    for s in ["train.epochs=1", "train.max_steps_per_epoch=2", "train.max_val_batches=1", "train.batch_size=16"] {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "the tiny sweep failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("0 failed"), "{stdout}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    summary.as_array().unwrap().clone()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Checks what RESULTS.md needs from a sweep folder.
fn check(out: &Path, arms: &[Value]) {
    // The file's arms: the EdMIPS search to 2.0 bits, and uniform W2A2; two seeds each.
    assert_eq!(arms.len(), 2, "{arms:?}");
    let (search, uniform) = (&arms[0], &arms[1]);
    assert_eq!(search["kind"], "search");
    assert_eq!(search["arm"], "train.target.metric=bit; train.target.rate=0.05; train.target.value=2.0");
    assert_eq!((uniform["kind"].as_str(), uniform["arm"].as_str()), (Some("baseline"), Some("uniform w2a2")));
    for a in arms {
        assert_eq!(a["seeds"], serde_json::json!([0, 1]), "{a}");
        assert_eq!(a["failed"], 0);
        assert_eq!(f64s(&a["val_top1"]).len(), 2);
        // BitOps by the bitops plugin: counting the 8-bit stem and classifier adds to it.
        for (skip, int8) in f64s(&a["bitops"]).iter().zip(f64s(&a["bitops_int8"])) {
            assert!(*skip > 0.0 && int8 > *skip, "{a}");
        }
    }
    // The budget: the searched architectures are repaired to 2.0 bit within the tolerance.
    for b in f64s(&search["bit"]) {
        assert!((b - 2.0).abs() <= 0.01 + 1e-9, "searched bit {b}");
    }
    assert_eq!(f64s(&uniform["bit"]), [2.0, 2.0]);
    // The seeds give different runs (initialisation and data order), and one seed's search
    // and uniform retrain share it.
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 4);
    for cell in ["cell-000", "cell-001"] {
        assert!(out.join(cell).join("search/arch.svg").is_file(), "{cell}: no arch.svg");
        let retrain = std::fs::read_to_string(out.join(cell).join("retrain/config.resolved.toml")).unwrap();
        assert!(retrain.contains("epochs = 1") && retrain.contains("step_epoch = 2"), "{retrain}");
    }
    for f in ["pareto.svg", "summary.md", "results.md", "results.csv"] {
        assert!(out.join(f).is_file(), "no {f}");
    }
}

#[test]
fn the_experiment_sweep_runs_at_smoke_size_on_the_embedded_data() {
    let t = TempDir::new("exp-embedded");
    let out = t.0.join("sweep");
    let arms = tiny_sweep(None, &out);
    check(&out, &arms);
}

#[test]
fn the_experiment_sweep_runs_at_smoke_size_on_cifar10() {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10.tar.gz");
    assert!(tarball.is_file(), "this test reads {} (the project's shared/data)", tarball.display());
    let t = TempDir::new("exp-cifar10");
    let data = t.0.join("cifar10");
    std::fs::create_dir_all(&data).unwrap();
    let st = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&data).status().unwrap();
    assert!(st.success(), "tar xzf {} failed", tarball.display());
    let out = t.0.join("sweep");
    let arms = tiny_sweep(Some(&data), &out);
    check(&out, &arms);
    // On CIFAR-10 the network is the 3-channel 32x32 ResNet-20.
    let cfg = std::fs::read_to_string(out.join("cell-000/search/config.resolved.toml")).unwrap();
    assert!(!cfg.contains("channels = 1"), "{cfg}");
}
