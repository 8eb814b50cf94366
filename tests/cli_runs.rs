//! The reference's command lines run as they are (on a small ImageFolder, with capped steps), and
//! bad input is rejected before any work starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edmips(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edmips")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edmips-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A two-class ImageFolder of small non-square PPM images.
fn image_folder(root: &Path) {
    for (split, n) in [("train", 4), ("val", 2)] {
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let (w, h) = (48, 40);
                let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
                for p in 0..w * h * 3 {
                    bytes.push(((p * 31 + i * 17 + c * 101) % 256) as u8);
                }
                std::fs::write(dir.join(format!("{i}.ppm")), bytes).unwrap();
            }
        }
    }
}

fn bits(arch_json: &Path) -> Vec<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(arch_json).unwrap()).unwrap();
    v["layers"].as_array().unwrap().iter().map(|l| (l["wbit"].as_u64().unwrap(), l["abit"].as_u64().unwrap())).collect()
}

#[test]
fn the_reference_search_and_train_command_lines_run() {
    let root = tmp("ref");
    let data = root.join("data");
    image_folder(&data);
    let (s_out, t_out) = (root.join("search"), root.join("train"));
    let d = data.to_str().unwrap();
    let cap = ["-b", "4", "--max-steps", "1", "--max-val-batches", "1"];
    // edmips search -a mixres18_w1234a234 --epochs 25 --step-epoch 10 --lr 0.1 --lra 0.01 --cd 0.00335 -j 16 DATA
    let mut args = vec!["search", "-a", "mixres18_w1234a234", "--epochs", "1", "--step-epoch", "10", "--lr", "0.1"];
    args.extend(["--lra", "0.01", "--cd", "0.00335", "-j", "2", d, "--out", s_out.to_str().unwrap()]);
    args.extend(cap);
    let o = edmips(&args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("note: the data has 2 classes"), "{out}");
    let arch = s_out.join("arch.json");
    assert!(out.contains(&format!("edmips train -a quantres18_cfg --ac {}", arch.display())), "{out}");
    let searched = bits(&arch);
    assert_eq!(searched.len(), 19);

    // edmips train -a quantres18_cfg --epochs 95 --step-epoch 30 -j 16 --ac ARCH_FILE DATA
    let mut args = vec!["train", "-a", "quantres18_cfg", "--epochs", "1", "--step-epoch", "30", "-j", "2"];
    args.extend(["--ac", arch.to_str().unwrap(), d, "--out", t_out.to_str().unwrap()]);
    args.extend(cap);
    let o = edmips(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(bits(&t_out.join("arch.json")), searched, "train builds exactly the searched argmax network");
    let metrics = std::fs::read_to_string(t_out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"epoch\"")), "{metrics}");

    // -e --resume evaluates the checkpoint.
    let ck = t_out.join("checkpoint.safetensors");
    let o = edmips(&[
        "train",
        "-a",
        "quantres18_cfg",
        "--ac",
        arch.to_str().unwrap(),
        d,
        "-e",
        "--resume",
        ck.to_str().unwrap(),
        "-b",
        "4",
    ]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("top-1") && out.contains("top-5"), "{out}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn bad_input_is_rejected_before_any_work() {
    let root = tmp("bad");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["search", "-a", "mixres81_w1234a234"], "did you mean `mixres18_w1234a234`"),
        (
            vec!["search", "-a", "mixtiny_w1234a234", "/nonexistent/data"],
            "DATA folder `/nonexistent/data` does not exist",
        ),
        (vec!["search", "--resume", "/nonexistent/ck.safetensors"], "no such checkpoint file"),
        (vec!["search", "--set", "train.learning_rate=0.1"], "unknown field `learning_rate`"),
        (vec!["search", "--set", "train.lr"], "expected key=value"),
        (vec!["search", "-a", "quantres18_cfg"], "not a search configuration"),
        (vec!["train", "-a", "mixres18_w1234a234"], "a search configuration"),
        (vec!["train", "-a", "quantres20_cfg", "--epochs", "1"], "--ac"),
        (vec!["train", "-a", "quantres20_cfg", "--ac", "/nonexistent/arch.json"], "no such architecture file"),
        (vec!["search", "--device", "tpu"], "expected cpu, cuda or cuda:N"),
    ];
    for (args, want) in cases {
        let mut a = args.clone();
        let out = root.join("o");
        a.extend(["--out", out.to_str().unwrap()]);
        let o = edmips(&a);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} should fail:\n{t}");
        assert!(t.contains(want), "{args:?}: expected `{want}` in:\n{t}");
    }
    // A wrong arch file names the problem.
    let bad = root.join("arch.json");
    std::fs::write(&bad, "[[2, 2], [2, 2]]").unwrap();
    let o = edmips(&[
        "train",
        "-a",
        "quantres20_cfg",
        "--ac",
        bad.to_str().unwrap(),
        "--out",
        root.join("o2").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("20") && t.contains("found 2"), "{t}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn bench_step_reports_json() {
    let o = edmips(&["bench", "step", "-a", "mixtiny_w1234a234", "-b", "2", "--iters", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "search");
    assert!(v["median_ms"].as_f64().unwrap() > 0.0 && v["images_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_cifar10_search_runs_on_the_real_data() {
    let tarball = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10.tar.gz");
    assert!(
        tarball.is_file(),
        "{} is missing: this test needs the real CIFAR-10 in ../shared/data next to the repository",
        tarball.display()
    );
    let root = tmp("cifar");
    let st = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&root).status().unwrap();
    assert!(st.success(), "unpacking {}", tarball.display());
    // The archive holds train/ and val/ at its top level (older copies had a cifar/ folder).
    let data = if root.join("train").is_dir() { root.clone() } else { root.join("cifar") };
    let out = root.join("run");
    // edmips search -a mixres20_w1234a234 --epochs 1 DATA, capped to a few steps.
    let o = edmips(&[
        "search",
        "-a",
        "mixres20_w1234a234",
        "--epochs",
        "1",
        data.to_str().unwrap(),
        "-b",
        "32",
        "-j",
        "2",
        "--max-steps",
        "3",
        "--max-val-batches",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("50000 train / 10000 val images, 10 classes"), "{t}");
    assert_eq!(bits(&out.join("arch.json")).len(), 20);
    std::fs::remove_dir_all(root).unwrap();
}
