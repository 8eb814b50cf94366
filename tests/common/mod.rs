//! Shared helpers of the integration tests: reading `../shared/golden` and comparing numbers.
#![allow(dead_code)]

pub mod resnet20;

use std::path::PathBuf;

use serde_json::Value;

/// The device of the device-parameterised parity tests (`golden_quantizers`,
/// `golden_mix_conv`, `engine_tiny_steps`, `engine_resnet18_step`): `$EDMIPS_TEST_DEVICE`
/// (`cpu`, the default, or `cuda` / `cuda:N`, which needs a `--features cuda` build and a GPU).
/// `scripts/gpu-check.sh` runs those tests with `EDMIPS_TEST_DEVICE=cuda`.
pub fn test_device() -> edmips::core::candle::Device {
    match std::env::var("EDMIPS_TEST_DEVICE") {
        Ok(s) if !s.trim().is_empty() => {
            edmips::engine::trainer::parse_device(s.trim()).unwrap_or_else(|e| panic!("EDMIPS_TEST_DEVICE={s}: {e}"))
        }
        _ => edmips::core::candle::Device::Cpu,
    }
}

/// Whether `dev` is a CUDA device (the tests loosen some tolerances there, each saying why).
pub fn is_cuda(dev: &edmips::core::candle::Device) -> bool {
    dev.is_cuda()
}

/// The golden data folder: `$EDMIPS_GOLDEN`, else `../shared/golden` beside the repository.
pub fn golden_dir() -> PathBuf {
    if let Ok(p) = std::env::var("EDMIPS_GOLDEN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("golden")
}

/// Parses one golden file; panics with the expected location when it is missing.
pub fn load(name: &str) -> Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} not readable ({e}). The parity tests need the reference outputs in \
             ../shared/golden next to the repository (or set EDMIPS_GOLDEN to their folder).",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden file {} is not valid JSON: {e}", path.display()))
}

/// A JSON number list as f32 (each parsed as f64, then rounded to f32: the exact bit pattern).
pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// A JSON number list as f64.
pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// A golden tensor `{"shape": [...], "data": [...]}`.
pub fn tensor(v: &Value) -> (Vec<usize>, Vec<f32>) {
    let shape = v["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    (shape, f32s(&v["data"]))
}

/// A golden tensor as a candle tensor on the CPU.
pub fn candle_tensor(v: &Value) -> edmips::core::candle::Tensor {
    candle_tensor_on(v, &edmips::core::candle::Device::Cpu)
}

/// A golden tensor as a candle tensor on `dev`.
pub fn candle_tensor_on(v: &Value, dev: &edmips::core::candle::Device) -> edmips::core::candle::Tensor {
    let (shape, data) = tensor(v);
    edmips::core::candle::Tensor::from_vec(data, shape, dev).unwrap()
}

/// Flattens a tensor to a host vector.
pub fn host(t: &edmips::core::candle::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Exact equality (`==`, so -0.0 equals 0.0), reporting the first mismatch.
pub fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> =
        (0..got.len()).filter(|&i| got[i] != want[i] && !(got[i].is_nan() && want[i].is_nan())).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches, first at {}: got {} want {}",
        bad.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

/// Absolute tolerance, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0f64, 0usize);
    for i in 0..got.len() {
        let d = (got[i] as f64 - want[i] as f64).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    assert!(worst <= atol, "{what}: max abs error {worst:e} > {atol:e} at {at} (got {} want {})", got[at], want[at]);
}

/// `|got - want| <= atol + rtol·|want|` element-wise, reporting the worst element and printing
/// the measured error (so a GPU run's log shows how much margin each check has).
pub fn assert_near(what: &str, got: &[f32], want: &[f32], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at, mut abs) = (0f64, 0usize, 0f64);
    for i in 0..got.len() {
        let d = (got[i] as f64 - want[i] as f64).abs();
        let r = d / (atol + rtol * (want[i] as f64).abs());
        if r > worst || r.is_nan() {
            (worst, at) = (r, i);
        }
        abs = abs.max(d);
    }
    println!("{what}: max abs error {abs:e} ({:.3} of the tolerance)", worst);
    assert!(
        worst <= 1.0,
        "{what}: error above {atol:e} + {rtol:e}·|want| at {at} (got {} want {}); max abs error {abs:e}",
        got[at],
        want[at]
    );
}

/// Relative tolerance on a scalar.
pub fn assert_rel(what: &str, got: f64, want: f64, rtol: f64) {
    let err = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
    assert!(err <= rtol, "{what}: got {got} want {want} (relative error {err:e} > {rtol:e})");
}

/// Our parameter name for a reference `named_parameters` key (the reference nests the mixed
/// conv's logits and weight one level deeper).
pub fn our_name(reference: &str) -> String {
    reference
        .replace(".mix_activ.alpha_activ", ".alpha_activ")
        .replace(".mix_weight.alpha_weight", ".alpha_weight")
        .replace(".mix_weight.conv.weight", ".weight")
}

/// Sets every parameter listed in a golden file's `parameters` (rules `det_fill` and `const`)
/// and returns the map from our names to the reference's.
pub fn load_golden_params(
    net: &edmips::core::graph::Network,
    params: &Value,
) -> std::collections::HashMap<String, String> {
    let mut names = std::collections::HashMap::new();
    for p in params.as_array().expect("parameters") {
        let reference = p["name"].as_str().expect("name").to_string();
        let name = our_name(&reference);
        let var = &net.params().get(&name).unwrap_or_else(|| panic!("no parameter {name}")).var;
        let n = var.elem_count();
        let data = match p["rule"].as_str().expect("rule") {
            "det_fill" => edmips::core::init::det_fill(n, p["seed"].as_u64().unwrap(), p["scale"].as_f64().unwrap()),
            "const" => vec![p["value"].as_f64().expect("value") as f32; n],
            r => panic!("unknown rule {r}"),
        };
        var.set(&edmips::core::candle::Tensor::from_vec(data, var.shape(), var.device()).unwrap()).unwrap();
        names.insert(name, reference);
    }
    names
}

/// Run options for an engine test: CPU, no progress bar, quiet; `interrupt` pre-set stops a run
/// after its first step (as a Ctrl-C would).
pub fn run_opts(out: &std::path::Path, resume: Option<PathBuf>, interrupt: bool) -> edmips::engine::RunOptions {
    edmips::engine::RunOptions {
        out: out.to_path_buf(),
        device: edmips::core::candle::Device::Cpu,
        resume,
        evaluate: false,
        arch_file: None,
        interrupt: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(interrupt)),
        progress: false,
        verbose: false,
        start_epoch: None,
        force: false,
    }
}

/// A fresh (removed if present) temporary folder path `edmips-<name>-<pid>`.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edmips-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A fresh temporary folder `edmips-<name>-<pid>` (created), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it, removing what a killed earlier run left.
    pub fn new(name: &str) -> Self {
        let d = tmp_dir(name);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The run configuration `name` fitted to the embedded data for a short plugin run: 1 epoch of
/// 3 steps at batch 16, one validation batch, `cd` 0.01 (the plugin tests' shared setup).
pub fn short_embedded_run(name: &str) -> edmips::engine::RunConfig {
    edmips::link_builtins();
    let mut c = edmips::engine::RunConfig::named(name).unwrap();
    edmips::cli::default_job::fit_embedded_data(&mut c);
    c.model.num_classes = 10;
    let t = &mut c.train;
    t.epochs = 1;
    t.batch_size = 16;
    t.workers = 2;
    t.max_steps_per_epoch = Some(3);
    t.max_val_batches = Some(1);
    t.complexity_decay = 0.01;
    c
}
