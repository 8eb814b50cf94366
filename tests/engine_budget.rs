//! Searching to a budget: the controlled `cd` and the final repair land the discrete
//! architecture within the tolerance of the target, and the controller's state resumes exactly.

mod common;

use common::{run_opts, tmp_dir};

use edmips::core::candle::Device;
use edmips::engine::budget::BudgetTarget;
use edmips::engine::checkpoint;
use edmips::engine::{run, RunConfig, RunKind};

fn cfg(name: &str, target: f64, steps: usize) -> RunConfig {
    edmips::link_builtins();
    let mut c = RunConfig::named(name).unwrap();
    edmips::cli::default_job::fit_embedded_data(&mut c);
    c.model.num_classes = 10;
    let t = &mut c.train;
    t.epochs = 1;
    t.batch_size = 32;
    t.workers = 2;
    t.lra = 0.1;
    t.max_steps_per_epoch = Some(steps);
    t.max_val_batches = Some(1);
    t.print_freq = 1;
    t.complexity_decay = 0.003;
    t.seed = 11;
    t.target = Some(BudgetTarget::new("bit", target));
    c
}

#[test]
fn the_final_architecture_meets_targets_of_one_and_a_half_two_and_three_bits() {
    for target in [1.5, 2.0, 3.0] {
        let d = tmp_dir(&format!("budget-t{target}"));
        let s = run(RunKind::Search, cfg("mixres20_w1234a234", target, 6), run_opts(&d, None, false)).unwrap();
        let r = s.report.unwrap();
        let bit = r.argmax.get("bit").unwrap();
        assert!((bit - target).abs() <= 0.01, "target {target}: final bit {bit}\n{}", r.table());
        // arch.json holds the repaired bits, which is what `train --ac` reads.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("arch.json")).unwrap()).unwrap();
        let layers = json["layers"].as_array().unwrap();
        for (l, rl) in layers.iter().zip(&r.layers) {
            assert_eq!((l["wbit"].as_u64().unwrap() as u32, l["abit"].as_u64().unwrap() as u32), (rl.wbit, rl.abit));
        }
        if let Some(rep) = &r.repair {
            assert!((rep.after - bit).abs() < 1e-12 && !rep.changes.is_empty());
        }
        // The controller logged cd at every step.
        let m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        let cds: Vec<f64> = m
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "step")
            .map(|v| v["cd"].as_f64().unwrap())
            .collect();
        assert_eq!(cds.len(), 6);
        assert!(cds.iter().all(|&c| c > 0.0 && c.is_finite()));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_controller_state_survives_a_resume_bitwise() {
    let c = || {
        let mut c = cfg("mixtiny_w1234a234", 2.0, 4);
        c.train.batch_size = 16;
        c
    };
    let a = tmp_dir("budget-whole");
    run(RunKind::Search, c(), run_opts(&a, None, false)).unwrap();
    let b = tmp_dir("budget-resumed");
    assert!(run(RunKind::Search, c(), run_opts(&b, None, true)).unwrap().interrupted);
    let mid = checkpoint::read_state(&b.join("checkpoint.safetensors")).unwrap();
    assert!(mid.controller.as_ref().is_some_and(|k| k.cd != 0.003), "the checkpoint holds the updated cd");
    run(RunKind::Search, c(), run_opts(&b, Some(b.join("checkpoint.safetensors")), false)).unwrap();
    let (sa, sb) = (
        checkpoint::read_state(&a.join("checkpoint.safetensors")).unwrap(),
        checkpoint::read_state(&b.join("checkpoint.safetensors")).unwrap(),
    );
    let (ka, kb) = (sa.controller.unwrap(), sb.controller.unwrap());
    assert_eq!(ka.cd.to_bits(), kb.cd.to_bits());
    let (ta, tb) = (
        checkpoint::load(&a.join("checkpoint.safetensors"), &Device::Cpu).unwrap().tensors,
        checkpoint::load(&b.join("checkpoint.safetensors"), &Device::Cpu).unwrap().tensors,
    );
    for (k, t) in &ta {
        let (x, y) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            tb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{k} differs");
    }
    assert_eq!(std::fs::read(a.join("arch.json")).unwrap(), std::fs::read(b.join("arch.json")).unwrap());
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
