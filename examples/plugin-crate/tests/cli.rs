//! The example plugin crate's binary runs `list`, `inspect` and `search` with its own plugins
//! through the edmips command line, on the embedded data.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edmips-example")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn the_command_line_sees_and_runs_the_crates_plugins() {
    let o = run(&["list", "--kind", "quantizer"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("uniform_act") && t.contains("hwgq"), "{t}");
    let o = run(&["list", "--kind", "cost"]);
    assert!(text(&o).contains("memory_traffic"));

    let o = run(&["inspect", "-a", "mixres20_uniform_traffic"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("memory_traffic") && t.contains("traffic_kbit"), "{t}");

    let out = std::env::temp_dir().join(format!("edmips-example-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = run(&[
        "search",
        "-a",
        "mixres20_uniform_traffic",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--max-val-batches",
        "1",
        "--cd",
        "0.01",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("search finished"), "{t}");
    let cfg = std::fs::read_to_string(out.join("config.resolved.toml")).unwrap();
    assert!(cfg.contains("uniform_act") && cfg.contains("memory_traffic"), "{cfg}");
    let arch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("arch.json")).unwrap()).unwrap();
    assert_eq!(arch["argmax"]["headline"]["name"], "traffic_kbit", "the plugin cost summarises the search");
    std::fs::remove_dir_all(out).unwrap();
}
