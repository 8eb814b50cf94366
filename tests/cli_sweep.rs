//! `edmips sweep`: a killed sweep (kill -9 in the middle of a cell) rerun with the same folder
//! ends with the same results table as an uninterrupted sweep; finished cells are skipped on a
//! rerun; a failing cell is recorded and the sweep goes on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn edmips(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edmips")).args(args).output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edmips-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SWEEP: &str = r#"
name = "tiny"
config = "mixtiny_w1234a234"
baselines = [[2, 2]]

[set]
"train.epochs" = 2
"train.step_epoch" = 1
"train.max_steps_per_epoch" = 3
"train.batch_size" = 16
"train.max_val_batches" = 1
"train.print_freq" = 1
"train.lra" = 0.1

[grid]
"train.target.value" = [1.5, 2.5]
"model.relaxation.temperature" = [1.0, -1.0]

[retrain]
config = "quanttiny_cfg"
"#;

/// The results without the columns that measure time.
fn table(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    csv.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = f.len();
            f[..n - 2].join(",")
        })
        .collect()
}

#[test]
fn a_killed_sweep_rerun_gives_the_same_results_as_an_uninterrupted_one() {
    let d = tmp("kill");
    let file = d.join("tiny.toml");
    std::fs::write(&file, SWEEP).unwrap();
    let f = file.to_str().unwrap();

    let a = d.join("a");
    let o = edmips(&["sweep", f, "--out", a.to_str().unwrap(), "-j", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let rows = table(&a);
    assert_eq!(rows.len(), 1 + 4 + 1, "header, 4 cells, 1 baseline:\n{rows:#?}");
    let failed: Vec<&String> = rows.iter().filter(|r| r.contains("failed:")).collect();
    assert_eq!(failed.len(), 2, "the two cells with a negative temperature fail: {rows:#?}");
    assert!(failed.iter().all(|r| r.contains("temperature")), "{failed:?}");
    assert!(a.join("pareto.svg").is_file() && a.join("results.md").is_file() && a.join("results.json").is_file());

    // The same sweep, killed (SIGKILL) in cell 2 after its search finished (its retrain is
    // running), then rerun in the same folder: the search is taken from its checkpoint.
    let b = d.join("b");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edmips"))
        .args(["sweep", f, "--out", b.to_str().unwrap(), "-j", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("the sweep ended before cell 2's retrain").unwrap();
        if l.starts_with("sweep: cell-001 (2/5): retrain") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!b.join("cell-001/result.json").exists(), "killed inside cell 2");
    assert!(b.join("cell-001/search/checkpoint.safetensors").is_file());
    let o = edmips(&["sweep", f, "--out", b.to_str().unwrap(), "-j", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("cell-000 (1/5) [") && out.contains("done before, skipped"), "{out}");
    assert_eq!(table(&a), table(&b), "the rerun sweep has the uninterrupted one's results");

    // A rerun of a finished sweep skips every finished cell.
    let o = edmips(&["sweep", f, "--out", b.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("done before, skipped").count(), 3, "{out}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_bad_sweep_file_names_the_line_and_key() {
    let d = tmp("bad");
    let file = d.join("bad.toml");
    std::fs::write(&file, "config = \"mixtiny_w1234a234\"\n[grid]\n\"train.seed\" = 3\n").unwrap();
    let o = edmips(&["sweep", file.to_str().unwrap(), "--out", d.join("o").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("grid.train.seed") && err.contains("non-empty list"), "{err}");
    std::fs::write(&file, "config = \"mixtiny_w1234a234\"\nbaselines = [[2, 2]]\n").unwrap();
    let o = edmips(&["sweep", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("[retrain]"), "{err}");
}
