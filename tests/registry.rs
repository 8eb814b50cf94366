//! The registries: the exact set of built-in ids, helpful errors for unknown ids, `edmips list`.

use std::collections::BTreeSet;
use std::process::Command;

use edmips::core::registry::{self, PluginKind};
use edmips::PluginSpec;

fn ids(kind: PluginKind) -> BTreeSet<String> {
    edmips::link_builtins();
    registry::list(kind).unwrap().into_iter().map(|e| e.id).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn built_in_plugin_ids_are_exactly_these() {
    assert_eq!(ids(PluginKind::Quantizer), set(&["dorefa", "gauss", "hwgq", "lsq", "pact"]));
    assert_eq!(ids(PluginKind::Relaxation), set(&["gumbel", "softmax"]));
    assert_eq!(ids(PluginKind::Cost), set(&["activation_memory", "bitops", "latency_lut", "size"]));
}

#[test]
fn unknown_ids_list_the_closest_known_ones() {
    edmips::link_builtins();
    let e = registry::quantizer("hwqg").unwrap_err().to_string();
    assert!(e.contains("unknown quantizer id `hwqg`") && e.contains("did you mean `hwgq`"), "{e}");
    assert!(e.contains("known ids: `dorefa`, `gauss`, `hwgq`"), "{e}");
    let e = registry::build_cost(&PluginSpec::new("bitop")).unwrap_err().to_string();
    assert!(e.contains("did you mean `bitops`"), "{e}");
}

#[test]
fn plugins_build_from_specs_with_parameters() {
    edmips::link_builtins();
    let spec: PluginSpec = toml::from_str("id = \"softmax\"\ntemperature = 2.0").unwrap();
    let r = registry::build_relaxation(&spec).unwrap();
    assert_eq!(r.id(), "softmax");
    let spec: PluginSpec = toml::from_str("id = \"hwgq\"\nsteps = 3").unwrap();
    let e = registry::build_quantizer(&spec).unwrap_err().to_string();
    assert!(e.contains("hwgq") && e.contains("`steps`") && e.contains("takes no parameters"), "{e}");
}

#[test]
fn edmips_list_prints_ids_and_summaries_and_rejects_unknown_kinds() {
    let exe = env!("CARGO_BIN_EXE_edmips");
    let out = Command::new(exe).arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for id in ["hwgq", "gauss", "softmax", "bitops"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(id) && l.len() > id.len() + 10), "{id} in\n{text}");
    }
    let out = Command::new(exe).args(["list", "--kind", "quantizer", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    let out = Command::new(exe).args(["list", "--kind", "quantiser"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of quantizer"));
}

#[test]
fn edmips_list_shows_each_typed_parameter_and_filters() {
    let exe = env!("CARGO_BIN_EXE_edmips");
    let out = Command::new(exe).args(["list", "--kind", "relaxation"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("temperature: f64 = 1.0  Softmax temperature"), "{text}");
    assert!(text.contains("hard: bool = false"), "{text}");
    let out = Command::new(exe).args(["list", "--filter", "GUMBEL"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("gumbel") && text.contains("mixres20_gumbel_w1234a234") && !text.contains("  softmax "),
        "{text}"
    );
    let out = Command::new(exe).args(["list", "--kind", "quantizer"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // Every quantizer says whether it has a fused kernel or uses the composed mixture, and a
    // learnable one says what it learns.
    let entries: Vec<&str> = text.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")).collect();
    assert_eq!(entries.len(), 5, "{text}");
    for l in &entries {
        let fused = l.contains("(fused mixture kernel, CPU + CUDA)");
        assert!(fused != l.contains("(composed mixture"), "{l}");
        assert_eq!(l.contains("learns"), l.starts_with("  lsq") || l.starts_with("  pact"), "{l}");
    }
    assert!(text.contains("learns step (initialised from data)"), "{text}");
    let out = Command::new(exe).args(["list", "--kind", "relaxation", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gumbel = v.as_array().unwrap().iter().find(|e| e["id"] == "gumbel").unwrap();
    assert_eq!(gumbel["params"][2]["name"], "decay");
    assert_eq!(gumbel["params"][2]["default"], 0.956);
}
