//! What a user meets at the command line when an input would make a run empty, meaningless or
//! unclear: each is refused before any work starts, naming the flag or key; run folders have one
//! owner; `--skip-bad` never hides a split without usable images; Ctrl-C exits with its own
//! status and says how to resume.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn edmips(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edmips")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edmips-clirel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn refused(args: &[&str], needles: &[&str]) {
    let o = edmips(args);
    let out = text(&o);
    assert!(!o.status.success(), "{args:?} should fail:\n{out}");
    for n in needles {
        assert!(out.contains(n), "{args:?}: expected `{n}` in:\n{out}");
    }
}

/// Two classes of 4 train / 2 val 8x8 PPM images; `bad` makes those splits undecodable.
fn image_folder(root: &Path, bad_train: bool, bad_val: bool) {
    for (split, n, bad) in [("train", 4, bad_train), ("val", 2, bad_val)] {
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let mut bytes = b"P6\n8 8\n255\n".to_vec();
                bytes.extend((0..192).map(|p| ((p * 7 + i * 13 + c * 50) % 256) as u8));
                if bad {
                    bytes.truncate(20);
                }
                std::fs::write(dir.join(format!("{i}.ppm")), bytes).unwrap();
            }
        }
    }
}

#[test]
fn values_that_make_a_run_empty_are_refused_naming_the_flag() {
    refused(&["search", "--epochs", "0"], &["--epochs", "at least 1"]);
    refused(&["search", "--max-steps", "0"], &["--max-steps", "at least 1"]);
    refused(&["search", "--max-val-batches", "0"], &["--max-val-batches"]);
    refused(&["bench", "step", "-a", "mixtiny_w1234a234", "--iters", "0"], &["--iters", "at least 1"]);
    refused(&["bench", "step", "-a", "mixtiny_w1234a234", "-b", "0"], &["--batch-size", "at least 1"]);
    refused(&["search", "--set", "train.epochs=0"], &["train.epochs (--epochs)", "at least 1"]);
}

#[test]
fn configurations_that_make_the_search_meaningless_are_refused() {
    refused(&["search", "--cd", "-0.5"], &["train.complexity_decay (--cd)", "non-negative", "-0.5"]);
    refused(&["search", "--cd=-0.5"], &["train.complexity_decay (--cd)"]);
    refused(&["search", "--lr", "-0.1"], &["train.lr (--lr)", "non-negative"]);
    refused(
        &["search", "-a", "mixtiny_w1234a234", "--set", "model.mode.abits=[2, 3, 3]"],
        &["activation bit candidates [2, 3, 3]", "twice"],
    );
    refused(&["search", "-e"], &["--resume", "evaluation needs the checkpoint"]);
    let d = tmp("ac");
    let ac = d.join("arch.json");
    std::fs::write(&ac, "[[2, 2]]").unwrap();
    refused(
        &["train", "-a", "quantres20_2w2a", "--ac", ac.to_str().unwrap()],
        &["--ac", "does not read an architecture file"],
    );
}

#[test]
fn a_toml_value_of_the_wrong_type_names_the_dotted_key_and_its_line() {
    let d = tmp("toml");
    let f = d.join("run.toml");
    std::fs::write(&f, "# my run\n[train]\nepochs = 3\nlr = \"fast\"\n").unwrap();
    refused(&["search", "--config", f.to_str().unwrap()], &["run.toml", "train.lr (line 4)", "f64"]);
    std::fs::write(&f, "[train\nlr = 1\n").unwrap();
    refused(&["search", "--config", f.to_str().unwrap()], &["run.toml", "line 1"]);
}

#[test]
fn a_fresh_run_never_writes_over_another_runs_folder() {
    let d = tmp("owner");
    let out = d.join("run");
    let base = ["search", "-a", "mixtiny_w1234a234", "--epochs", "1", "--max-steps", "1", "--max-val-batches", "1"];
    let with_out = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--out", out.to_str().unwrap()]);
        a.extend(extra);
        edmips(&a)
    };
    let o = with_out(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let first = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let o = with_out(&[]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("is not empty") && t.contains("--force") && t.contains("--resume"),
        "{t}"
    );
    assert_eq!(std::fs::read(out.join("checkpoint.safetensors")).unwrap(), first, "nothing was overwritten");
    let o = with_out(&["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let ck = out.join("checkpoint.safetensors");
    let o = edmips(&["search", "-a", "mixtiny_w1234a234", "--epochs", "1", "--resume", ck.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("already finished"), "{t}");
}

#[test]
fn skip_bad_counts_what_it_skips_and_refuses_a_split_without_usable_images() {
    let d = tmp("skip");
    let run = |data: &Path, out: &str| {
        edmips(&[
            "search",
            "-a",
            "mixtiny_w1234a234",
            data.to_str().unwrap(),
            "--skip-bad",
            "--epochs",
            "1",
            "-b",
            "2",
            "--out",
            d.join(out).to_str().unwrap(),
        ])
    };
    let bad_val = d.join("bad-val");
    image_folder(&bad_val, false, true);
    let o = run(&bad_val, "a");
    let t = text(&o);
    assert!(!o.status.success() && t.contains("validation: no usable image") && t.contains("4 of 4 skipped"), "{t}");
    let bad_train = d.join("bad-train");
    image_folder(&bad_train, true, false);
    let o = run(&bad_train, "b");
    let t = text(&o);
    assert!(!o.status.success() && t.contains("no usable training image") && t.contains("8 of 8"), "{t}");
    assert!(!d.join("b/arch.json").exists(), "no architecture from untrained logits");
    // One bad val image: counted in the summary and in metrics.jsonl.
    let some = d.join("some-bad");
    image_folder(&some, false, false);
    std::fs::write(some.join("val/cat/0.ppm"), b"P6\n8 8\n255\nshort").unwrap();
    let o = run(&some, "c");
    let t = text(&o);
    assert!(o.status.success() && t.contains("1 bad val images skipped"), "{t}");
    let m = std::fs::read_to_string(d.join("c/metrics.jsonl")).unwrap();
    assert!(m.lines().any(|l| l.contains("\"kind\":\"epoch\"") && l.contains("\"val_skipped\":1")), "{m}");
}

#[test]
fn ctrl_c_saves_exits_with_130_and_says_how_to_resume() {
    let d = tmp("ctrlc");
    let out = d.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edmips"))
        .args(["search", "-a", "mixtiny_w1234a234", "-p", "1", "--epochs", "2", "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // Wait for the first step line, then send SIGINT.
    loop {
        let l = lines.next().expect("the run printed no step line").unwrap();
        if l.starts_with("epoch 1/2 [") {
            break;
        }
    }
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stdout: {rest:?}\nstderr: {err}");
    assert!(err.contains("--resume") && err.contains("checkpoint.safetensors"), "{err}");
    assert!(out.join("checkpoint.safetensors").is_file());
}
