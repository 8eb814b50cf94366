//! The plugins beyond EdMIPS in whole runs: a short search on the embedded data with DoReFa
//! weights, with the Gumbel-softmax relaxation and with the activation-memory cost, and an
//! exact resume with Gumbel noise.

mod common;

use common::{run_opts, tmp_dir};
use std::path::Path;

use edmips::core::candle::Device;
use edmips::core::PluginSpec;
use edmips::engine::checkpoint;
use edmips::engine::{run, RunConfig, RunKind};

fn cfg(name: &str) -> RunConfig {
    common::short_embedded_run(name)
}

#[test]
fn a_short_search_runs_with_dorefa_weights_and_with_gumbel() {
    for name in ["mixres20_dorefa_w1234a234", "mixres20_gumbel_w1234a234"] {
        let d = tmp_dir(&format!("plugins-{name}"));
        let s = run(RunKind::Search, cfg(name), run_opts(&d, None, false)).unwrap();
        let v = s.last_val.unwrap();
        assert!(v.ce.is_finite() && v.images > 0, "{name}");
        let r = s.report.unwrap();
        assert_eq!(r.layers.len(), 20, "{name}");
        std::fs::remove_dir_all(d).unwrap();
    }
    let d = tmp_dir("plugins-activation-memory");
    let mut c = cfg("mixres20_w1234a234");
    c.model.cost = PluginSpec::new("activation_memory");
    let s = run(RunKind::Search, c, run_opts(&d, None, false)).unwrap();
    let r = s.report.unwrap();
    assert_eq!(r.argmax.headline.name, "activation_kbit");
    assert!(r.argmax.get("peak_kbit").unwrap() > 0.0);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_search_with_gumbel_noise_resumes_bitwise() {
    let c = || {
        let mut c = cfg("mixtiny_w1234a234");
        c.model.relaxation = PluginSpec::new("gumbel");
        c.model.relaxation.params.insert("hard".into(), toml::Value::Boolean(true));
        c.train.max_steps_per_epoch = Some(4);
        c
    };
    let a = tmp_dir("plugins-gumbel-whole");
    run(RunKind::Search, c(), run_opts(&a, None, false)).unwrap();
    let b = tmp_dir("plugins-gumbel-resumed");
    assert!(run(RunKind::Search, c(), run_opts(&b, None, true)).unwrap().interrupted);
    run(RunKind::Search, c(), run_opts(&b, Some(b.join("checkpoint.safetensors")), false)).unwrap();
    let load = |d: &Path| checkpoint::load(&d.join("checkpoint.safetensors"), &Device::Cpu).unwrap().tensors;
    let (ta, tb) = (load(&a), load(&b));
    for (k, t) in &ta {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = tb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{k} differs after the resume");
    }
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
