//! `edmips sweep`: a grid of searches (and retrains of what they find) over any configuration
//! keys, with uniform baselines, collected into one results table and a Pareto plot.
//!
//! A sweep file (TOML):
//!
//! ```toml
//! name = "targets"                  # optional; names the default output folder
//! config = "mixres20_w1234a234"     # the named search configuration every cell starts from
//!
//! [set]                             # dotted-key overrides for every run (search and retrain)
//! "train.epochs" = 2
//!
//! [grid]                            # the cartesian product of these lists: one cell each
//! "train.target.value" = [1.5, 2.0, 3.0]
//! "model.weight_quantizer.id" = ["gauss"]
//! "train.seed" = [0, 1]
//!
//! [[cells]]                         # optional explicit cells, each combined with the grid
//! "model.act_quantizer.id" = "hwgq"
//!
//! [retrain]                         # optional: retrain each cell's searched architecture
//! config = "quantres20_cfg"
//! set = { "train.epochs" = 3 }
//!
//! baselines = [[2, 2], [3, 3]]      # optional uniform (wbit, abit) allocations, retrained
//! seeds = [0, 1]                    # optional: every cell and baseline once per seed
//! ```
//!
//! (In a real file the top-level keys `baselines` and `seeds` come before the first table.)
//! `seeds` sets `train.seed` of every run, search and retrain, so a seed's runs share
//! initialisation, data order and augmentation across arms; the rows are then summarised per
//! arm (the cell's keys without the seed) in `summary.md` / `summary.json`: the val top-1 of
//! each seed, their mean, sample standard deviation and range.
//!
//! Each cell gets a folder `cell-NNN/` with `search/` and `retrain/` run folders and, once
//! finished, `result.json`; each baseline `baseline-wWaA/`. The sweep folder holds
//! `results.csv`, `results.json`, `results.md`, `summary.md`, `summary.json` (rewritten after
//! every cell) and `pareto.svg`
//! (val top-1 against the chosen architecture's cost metric: one colour per combination of the
//! non-budget keys, the baselines as a line). A rerun with the same `--out` skips finished
//! cells, resumes a killed run from its checkpoint (exactly, since runs resume bitwise), and
//! retries failed ones; a failing cell is recorded with its error and the sweep goes on.
//!
//! Every row reports the chosen architecture's BitOps twice, both computed by the `bitops`
//! cost plugin whatever cost the search used: with the full-precision stem and classifier
//! skipped (the reference's convention, `bitops`) and with them counted at 8 bits
//! (`bitops_int8`, HAWQ-V3's convention).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use edmips_core::error::{Error, Result};
use edmips_core::graph::declare_graph;
use edmips_core::{registry, CostSummary, LayerBits, ModelConfig, PluginSpec, Table};
use edmips_plugins::cost::bitops::ID as BITOPS;

use super::arch_report::ArchReport;
use super::atomic::write_atomic;
use super::metrics::read_history;
use super::run_config::RunConfig;
use super::trainer::{run, RunKind, RunOptions};

/// The retrain part of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSpec {
    /// The named `*_cfg` configuration that retrains a searched architecture.
    pub config: String,
    /// Dotted-key overrides for the retrains only (after the sweep's `set`).
    #[serde(default)]
    pub set: toml::Table,
}

/// A sweep file (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Name of the sweep.
    #[serde(default)]
    pub name: Option<String>,
    /// The named search configuration.
    pub config: String,
    /// Overrides for every run.
    #[serde(default)]
    pub set: toml::Table,
    /// Lists of values whose cartesian product gives the cells.
    #[serde(default)]
    pub grid: toml::Table,
    /// Explicit cells (each combined with every grid point).
    #[serde(default)]
    pub cells: Vec<toml::Table>,
    /// Retrain the searched architectures.
    #[serde(default)]
    pub retrain: Option<RetrainSpec>,
    /// Uniform `(wbit, abit)` allocations retrained as baselines (needs `retrain`).
    #[serde(default)]
    pub baselines: Vec<[u32; 2]>,
    /// Seeds: every cell and every baseline runs once per seed (`train.seed`); empty = once,
    /// with the configuration's seed.
    #[serde(default)]
    pub seeds: Vec<u64>,
}

impl SweepSpec {
    /// Reads a sweep file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading sweep file", path, e))?;
        let spec: SweepSpec = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            Error::config(
                path.display().to_string(),
                line.map(|l| format!("line {l}")).unwrap_or_else(|| "(file)".into()),
                e.message().to_string(),
            )
        })?;
        for (k, v) in &spec.grid {
            if !matches!(v, toml::Value::Array(a) if !a.is_empty()) {
                return Err(Error::config(
                    path.display().to_string(),
                    format!("grid.{k}"),
                    "expected a non-empty list",
                ));
            }
        }
        let seed_key = |t: &toml::Table| t.contains_key(SEED_KEY);
        if !spec.seeds.is_empty() && (seed_key(&spec.grid) || spec.cells.iter().any(seed_key)) {
            return Err(Error::config(
                path.display().to_string(),
                "seeds",
                format!("`seeds` and a `{SEED_KEY}` key in [grid] or [[cells]] both set the seed: keep one"),
            ));
        }
        let mut seeds = spec.seeds.clone();
        seeds.sort_unstable();
        if seeds.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::config(path.display().to_string(), "seeds", "a seed is listed twice"));
        }
        if !spec.baselines.is_empty() && spec.retrain.is_none() {
            return Err(Error::config(
                path.display().to_string(),
                "baselines",
                "baselines are retrained: add a [retrain] table naming the *_cfg configuration",
            ));
        }
        Ok(spec)
    }

    /// The cells: each a list of (dotted key, value), in a stable order; with `seeds`, every
    /// combination once per seed (seed last, so a combination's seeds are adjacent).
    pub fn expand(&self) -> Vec<Vec<(String, toml::Value)>> {
        let cells = self.expand_without_seeds();
        if self.seeds.is_empty() {
            return cells;
        }
        cells
            .into_iter()
            .flat_map(|c| {
                self.seeds.iter().map(move |&s| {
                    let mut q = c.clone();
                    q.push((SEED_KEY.to_string(), toml::Value::Integer(s as i64)));
                    q
                })
            })
            .collect()
    }

    /// The baseline runs: each uniform allocation once per seed (`None`: the config's seed).
    pub fn baseline_runs(&self) -> Vec<([u32; 2], Option<u64>)> {
        let seeds: Vec<Option<u64>> =
            if self.seeds.is_empty() { vec![None] } else { self.seeds.iter().map(|&s| Some(s)).collect() };
        self.baselines.iter().flat_map(|&b| seeds.iter().map(move |&s| (b, s))).collect()
    }

    /// The number of rows the sweep produces (cells and baseline runs).
    pub fn len(&self) -> usize {
        self.expand().len() + self.baseline_runs().len()
    }

    /// Whether the sweep has no rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expand_without_seeds(&self) -> Vec<Vec<(String, toml::Value)>> {
        let mut points: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
        for (k, v) in &self.grid {
            let values = v.as_array().cloned().unwrap_or_default();
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |x| {
                        let mut q = p.clone();
                        q.push((k.clone(), x.clone()));
                        q
                    })
                })
                .collect();
        }
        if self.cells.is_empty() {
            return points;
        }
        self.cells
            .iter()
            .flat_map(|c| {
                points.iter().map(move |p| {
                    let mut q: Vec<(String, toml::Value)> = c.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    q.extend(p.iter().cloned());
                    q
                })
            })
            .collect()
    }
}

/// The configuration key that `seeds` sets.
pub const SEED_KEY: &str = "train.seed";

/// How to run a sweep (not part of the sweep file).
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The sweep folder.
    pub out: PathBuf,
    /// The data (`None`: the embedded Fashion-MNIST subset).
    pub data: Option<PathBuf>,
    /// Device.
    pub device: Device,
    /// Loader threads for every run.
    pub workers: Option<usize>,
    /// `key=value` overrides applied last to every run (`edmips sweep --set`), e.g. to run a
    /// sweep file in a smoke-size mode.
    pub sets: Vec<String>,
    /// Stop after the current step of the current run (Ctrl-C); a rerun continues.
    pub interrupt: Arc<AtomicBool>,
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// `cell-NNN`, `baseline-wWaA` or, with seeds, `baseline-wWaA-seedS`.
    pub cell: String,
    /// `search` (a cell) or `baseline`.
    pub kind: String,
    /// The cell's keys and values, `key=value` joined by `; `.
    pub params: String,
    /// The arm: `params` without the seed (the rows of one arm differ only in their seed).
    #[serde(default)]
    pub arm: String,
    /// The seed set by the sweep's `seeds` (or by a `train.seed` grid key).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `done`, or `failed: <error>`.
    pub status: String,
    /// Search: final train top-1 (percent).
    pub search_train_top1: Option<f64>,
    /// Search: final val top-1.
    pub search_val_top1: Option<f64>,
    /// Search: final val top-5.
    pub search_val_top5: Option<f64>,
    /// Retrain: final train top-1.
    pub retrain_train_top1: Option<f64>,
    /// Retrain: final val top-1.
    pub retrain_val_top1: Option<f64>,
    /// Retrain: final val top-5.
    pub retrain_val_top5: Option<f64>,
    /// The chosen architecture's BitOps (MBitOps) by the `bitops` plugin, full-precision
    /// stem and classifier skipped.
    pub bitops: Option<f64>,
    /// The same with the full-precision layers counted at 8 bits (`fixed_layers = "int8"`).
    #[serde(default)]
    pub bitops_int8: Option<f64>,
    /// Its normalised bit (`bit`).
    pub bit: Option<f64>,
    /// Its weight size (`bitw`, Mbit).
    pub size: Option<f64>,
    /// Wall time of the cell's runs in this and earlier invocations (seconds).
    pub wall_s: f64,
    /// Training images/s of the search (or the baseline's retrain).
    pub images_per_s: Option<f64>,
}

impl CellResult {
    fn new(cell: &str, kind: &str, params: String, arm: String, seed: Option<u64>) -> Self {
        CellResult {
            cell: cell.into(),
            kind: kind.into(),
            params,
            arm,
            seed,
            status: String::new(),
            search_train_top1: None,
            search_val_top1: None,
            search_val_top5: None,
            retrain_train_top1: None,
            retrain_val_top1: None,
            retrain_val_top5: None,
            bitops: None,
            bitops_int8: None,
            bit: None,
            size: None,
            wall_s: 0.0,
            images_per_s: None,
        }
    }

    /// The val top-1 that stands for the cell: the retrain's when there is one.
    pub fn val_top1(&self) -> Option<f64> {
        self.retrain_val_top1.or(self.search_val_top1)
    }
}

/// The outcome of one run inside a cell: (train top-1, val top-1, val top-5, images/s) of its
/// last epoch, and its architecture report.
type RunOutcome = ((f64, f64, f64, f64), ArchReport);

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn params_text(p: &[(String, toml::Value)]) -> String {
    p.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join("; ")
}

/// The arm of a cell (its keys without the seed) and its seed.
fn arm_and_seed(p: &[(String, toml::Value)]) -> (String, Option<u64>) {
    let seed = p.iter().find(|(k, _)| k == SEED_KEY).and_then(|(_, v)| v.as_integer()).map(|s| s as u64);
    let rest: Vec<(String, toml::Value)> = p.iter().filter(|(k, _)| k != SEED_KEY).cloned().collect();
    (params_text(&rest), seed)
}

fn overrides(t: &toml::Table) -> Vec<String> {
    t.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The run configuration `name` with the sweep's overrides and a cell's keys.
fn run_config(name: &str, data: Option<&Path>, sets: &[Vec<String>]) -> Result<RunConfig> {
    let mut cfg = RunConfig::named(name)?;
    if data.is_none() {
        crate::cli::default_job::fit_embedded_data(&mut cfg);
        cfg.model.num_classes = 10;
    }
    cfg.data.path = data.map(Path::to_path_buf);
    for s in sets {
        cfg = cfg.with_overrides(s)?;
    }
    Ok(cfg)
}

/// Runs (or continues) one run folder of a cell: resumes from its checkpoint when there is
/// one, else starts it fresh (over whatever a run killed before its first checkpoint left).
fn run_folder(
    kind: RunKind,
    cfg: RunConfig,
    out: &Path,
    arch_file: Option<PathBuf>,
    o: &SweepOptions,
) -> Result<RunOutcome> {
    let ck = out.join("checkpoint.safetensors");
    let resume = ck.is_file().then_some(ck);
    let opts = RunOptions {
        out: out.to_path_buf(),
        device: o.device.clone(),
        force: resume.is_none(),
        resume,
        evaluate: false,
        arch_file,
        interrupt: o.interrupt.clone(),
        progress: false,
        verbose: false,
        start_epoch: None,
    };
    let s = run(kind, cfg, opts)?;
    if s.interrupted {
        return Err(Error::msg("interrupted"));
    }
    let last = read_history(&out.join("metrics.jsonl"))
        .pop()
        .ok_or_else(|| Error::msg(format!("run `{}` finished without an epoch record", out.display())))?;
    let text =
        std::fs::read_to_string(out.join("arch.json")).map_err(|e| Error::io("reading", out.join("arch.json"), e))?;
    let report: ArchReport =
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", out.join("arch.json").display())))?;
    Ok(((last.train_top1, last.val_top1, last.val_top5, last.images_per_s), report))
}

/// The chosen architecture's figures: `bit` and `bitw` from the run's own cost when it has
/// them, and BitOps under both conventions from the `bitops` plugin.
fn fill_cost(r: &mut CellResult, report: &ArchReport, model: &ModelConfig) -> Result<()> {
    let graph = declare_graph(model)?;
    let layers = graph.searchable_layers();
    let bits: Vec<LayerBits> =
        report.bits().iter().map(|&(w, a)| LayerBits { wbit: w as f64, abit: a as f64 }).collect();
    if bits.len() != layers.len() {
        return Err(Error::msg(format!(
            "the architecture report has {} layers, the model {}",
            bits.len(),
            layers.len()
        )));
    }
    let summary = |policy: &str| -> Result<CostSummary> {
        let mut params = Table::new();
        params.insert("fixed_layers".into(), toml::Value::String(policy.into()));
        let mut cost = registry::build_cost(&PluginSpec { id: BITOPS.into(), params })?;
        cost.set_fixed_layers(&graph.fixed_layers());
        Ok(cost.summarize(layers, &bits))
    };
    let (skip, int8) = (summary("skip")?, summary("int8")?);
    r.bitops = skip.get("bitops");
    r.bitops_int8 = int8.get("total_bitops");
    r.bit = report.argmax.get("bit").or(skip.get("bit"));
    r.size = report.argmax.get("bitw").or(skip.get("bitw"));
    Ok(())
}

fn read_result(p: &Path) -> Option<CellResult> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// Runs a sweep; returns every row (cells, then baselines). Stops early (with an error) only
/// on an interrupt; other failures are recorded in their row.
pub fn run_sweep(spec: &SweepSpec, o: &SweepOptions) -> Result<Vec<CellResult>> {
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io("creating sweep folder", &o.out, e))?;
    let cells = spec.expand();
    let baselines = spec.baseline_runs();
    let n = cells.len() + baselines.len();
    let base_sets = {
        let mut s = overrides(&spec.set);
        if let Some(w) = o.workers {
            s.push(format!("train.workers={w}"));
        }
        s
    };
    let mut rows: Vec<CellResult> = Vec::new();
    let started = Instant::now();
    let mut ran = 0usize;
    for (i, cell) in cells.iter().enumerate() {
        let name = format!("cell-{i:03}");
        let dir = o.out.join(&name);
        let result_path = dir.join("result.json");
        let params = params_text(cell);
        let (arm, seed) = arm_and_seed(cell);
        if let Some(r) = read_result(&result_path).filter(|r| r.status == "done") {
            println!("sweep: {name} ({}/{n}) [{params}]: done before, skipped", i + 1);
            rows.push(r);
            continue;
        }
        println!("sweep: {name} ({}/{n}) [{params}]: search", i + 1);
        let prior = read_result(&dir.join("partial.json")).map(|r| r.wall_s).unwrap_or(0.0);
        let t0 = Instant::now();
        let mut cell_sets: Vec<String> = cell.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cell_sets.extend(o.sets.iter().cloned());
        let mut row = CellResult::new(&name, "search", params.clone(), arm, seed);
        let outcome = (|| -> Result<()> {
            let cfg = run_config(&spec.config, o.data.as_deref(), &[base_sets.clone(), cell_sets.clone()])?;
            let model = cfg.model.clone();
            let ((tr, v1, v5, ips), report) = run_folder(RunKind::Search, cfg, &dir.join("search"), None, o)?;
            (row.search_train_top1, row.search_val_top1, row.search_val_top5, row.images_per_s) =
                (Some(tr), Some(v1), Some(v5), Some(ips));
            fill_cost(&mut row, &report, &model)?;
            if let Some(rt) = &spec.retrain {
                println!("sweep: {name} ({}/{n}): retrain with {}", i + 1, rt.config);
                // The retrain's own overrides come before `--set`, which is applied last.
                let mut sets = overrides(&rt.set);
                sets.extend(o.sets.iter().cloned());
                let cfg = run_config(&rt.config, o.data.as_deref(), &[base_sets.clone(), cell_sets.clone(), sets])?;
                let arch = dir.join("search").join("arch.json");
                let ((tr, v1, v5, _), _) = run_folder(RunKind::Train, cfg, &dir.join("retrain"), Some(arch), o)?;
                (row.retrain_train_top1, row.retrain_val_top1, row.retrain_val_top5) = (Some(tr), Some(v1), Some(v5));
            }
            Ok(())
        })();
        row.wall_s = prior + t0.elapsed().as_secs_f64();
        if o.interrupt.load(Ordering::SeqCst) {
            let mut partial = row.clone();
            partial.status = "interrupted".into();
            let _ = write_atomic(
                &dir.join("partial.json"),
                serde_json::to_string_pretty(&partial).unwrap_or_default().as_bytes(),
            );
            return Err(Error::msg(format!("sweep interrupted in {name}; rerun the same command to continue")));
        }
        row.status = match outcome {
            Ok(()) => "done".into(),
            Err(e) => format!("failed: {e}"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        write_atomic(
            &result_path,
            serde_json::to_string_pretty(&row).map_err(|e| Error::msg(e.to_string()))?.as_bytes(),
        )?;
        ran += 1;
        let eta = started.elapsed().as_secs_f64() / ran as f64 * (n - rows.len() - 1) as f64;
        println!(
            "sweep: {name} ({}/{n}): {} | bit {} | val top-1 {} | {:.1} s | ETA {:.0} s",
            i + 1,
            row.status,
            row.bit.map(|b| format!("{b:.3}")).unwrap_or("-".into()),
            row.val_top1().map(|v| format!("{v:.2}%")).unwrap_or("-".into()),
            row.wall_s,
            eta
        );
        rows.push(row);
        write_tables(&o.out, &rows)?;
    }
    for (j, &([w, a], seed)) in baselines.iter().enumerate() {
        let k = cells.len() + j + 1;
        let name = match seed {
            Some(s) => format!("baseline-w{w}a{a}-seed{s}"),
            None => format!("baseline-w{w}a{a}"),
        };
        let dir = o.out.join(&name);
        let result_path = dir.join("result.json");
        let arm = format!("uniform w{w}a{a}");
        let params = match seed {
            Some(s) => format!("{arm}; {SEED_KEY}={s}"),
            None => arm.clone(),
        };
        if let Some(r) = read_result(&result_path).filter(|r| r.status == "done") {
            println!("sweep: {name} ({k}/{n}): done before, skipped");
            rows.push(r);
            continue;
        }
        let Some(rt) = &spec.retrain else { break };
        println!("sweep: {name} ({k}/{n}): retrain {} at uniform w{w}a{a}", rt.config);
        let t0 = Instant::now();
        let mut row = CellResult::new(&name, "baseline", params, arm, seed);
        let outcome = (|| -> Result<()> {
            let mut sets = overrides(&rt.set);
            sets.extend(seed.map(|s| format!("{SEED_KEY}={s}")));
            sets.extend(o.sets.iter().cloned());
            let cfg = run_config(&rt.config, o.data.as_deref(), &[base_sets.clone(), sets])?;
            let model = cfg.model.clone();
            let layers = declare_graph(&cfg.model)?.searchable_layers().len();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
            let arch = dir.join("uniform.json");
            let bits: Vec<[u32; 2]> = vec![[w, a]; layers];
            write_atomic(&arch, serde_json::to_string(&bits).map_err(|e| Error::msg(e.to_string()))?.as_bytes())?;
            let ((tr, v1, v5, ips), report) = run_folder(RunKind::Train, cfg, &dir.join("retrain"), Some(arch), o)?;
            (row.retrain_train_top1, row.retrain_val_top1, row.retrain_val_top5, row.images_per_s) =
                (Some(tr), Some(v1), Some(v5), Some(ips));
            fill_cost(&mut row, &report, &model)?;
            Ok(())
        })();
        row.wall_s = t0.elapsed().as_secs_f64();
        if o.interrupt.load(Ordering::SeqCst) {
            return Err(Error::msg(format!("sweep interrupted in {name}; rerun the same command to continue")));
        }
        row.status = match outcome {
            Ok(()) => "done".into(),
            Err(e) => format!("failed: {e}"),
        };
        write_atomic(
            &result_path,
            serde_json::to_string_pretty(&row).map_err(|e| Error::msg(e.to_string()))?.as_bytes(),
        )?;
        println!(
            "sweep: {name} ({k}/{n}): {} | val top-1 {}",
            row.status,
            row.val_top1().map(|v| format!("{v:.2}%")).unwrap_or("-".into())
        );
        rows.push(row);
        write_tables(&o.out, &rows)?;
    }
    write_tables(&o.out, &rows)?;
    Ok(rows)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_default()
}

/// The columns of `results.csv` and `results.md`.
pub const COLUMNS: [&str; 17] = [
    "cell",
    "kind",
    "params",
    "seed",
    "status",
    "search_train_top1",
    "search_val_top1",
    "search_val_top5",
    "retrain_train_top1",
    "retrain_val_top1",
    "retrain_val_top5",
    "bitops",
    "bitops_int8",
    "bit",
    "size_mbit",
    "wall_s",
    "images_per_s",
];

fn cells_of(r: &CellResult) -> Vec<String> {
    vec![
        r.cell.clone(),
        r.kind.clone(),
        r.params.clone(),
        r.seed.map(|s| s.to_string()).unwrap_or_default(),
        r.status.clone(),
        opt(r.search_train_top1, 2),
        opt(r.search_val_top1, 2),
        opt(r.search_val_top5, 2),
        opt(r.retrain_train_top1, 2),
        opt(r.retrain_val_top1, 2),
        opt(r.retrain_val_top5, 2),
        opt(r.bitops, 4),
        opt(r.bitops_int8, 4),
        opt(r.bit, 4),
        opt(r.size, 4),
        format!("{:.1}", r.wall_s),
        opt(r.images_per_s, 1),
    ]
}

/// Writes `results.csv`, `results.json`, `results.md` and `pareto.svg` into `out`.
pub fn write_tables(out: &Path, rows: &[CellResult]) -> Result<()> {
    let csv_field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut csv = COLUMNS.join(",") + "\n";
    let mut md = format!("| {} |\n|{}\n", COLUMNS.join(" | "), "---|".repeat(COLUMNS.len()));
    for r in rows {
        let c = cells_of(r);
        csv += &(c.iter().map(|s| csv_field(s)).collect::<Vec<_>>().join(",") + "\n");
        md += &format!("| {} |\n", c.iter().map(|s| s.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
    }
    write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    let json = serde_json::to_string_pretty(rows).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&out.join("results.json"), json.as_bytes())?;
    let arms = summarize(rows);
    write_atomic(&out.join("summary.md"), summary_markdown(&arms).as_bytes())?;
    let json = serde_json::to_string_pretty(&arms).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    write_atomic(&out.join("pareto.svg"), super::plots::pareto(rows)?.as_bytes())
}

/// One arm of a sweep summarised over its seeds (the finished rows only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// The arm: the cell's keys without the seed, or `uniform wWaA`.
    pub arm: String,
    /// `search` or `baseline`.
    pub kind: String,
    /// The seeds of the finished rows, in row order (`None`: the configuration's seed).
    pub seeds: Vec<Option<u64>>,
    /// Val top-1 of each finished row (the retrain's when there is one), in the same order.
    pub val_top1: Vec<f64>,
    /// Their mean (`None` when no row finished).
    pub mean: Option<f64>,
    /// Their sample standard deviation (`n - 1`; 0 for a single row).
    pub std: Option<f64>,
    /// Their smallest value.
    pub min: Option<f64>,
    /// Their largest value.
    pub max: Option<f64>,
    /// Normalised bit of each row's chosen architecture.
    pub bit: Vec<f64>,
    /// BitOps (MBitOps, full-precision layers skipped) of each row's chosen architecture.
    pub bitops: Vec<f64>,
    /// BitOps with the full-precision layers at 8 bits.
    pub bitops_int8: Vec<f64>,
    /// Rows of the arm that did not finish.
    pub failed: usize,
}

/// Groups the rows by arm (first appearance order) and summarises each over its seeds.
pub fn summarize(rows: &[CellResult]) -> Vec<ArmSummary> {
    let mut arms: Vec<ArmSummary> = Vec::new();
    for r in rows {
        // Rows written before arms existed have no arm: their params stand for it.
        let arm = if r.arm.is_empty() { r.params.clone() } else { r.arm.clone() };
        let i = match arms.iter().position(|a| a.arm == arm && a.kind == r.kind) {
            Some(i) => i,
            None => {
                arms.push(ArmSummary {
                    arm,
                    kind: r.kind.clone(),
                    seeds: vec![],
                    val_top1: vec![],
                    mean: None,
                    std: None,
                    min: None,
                    max: None,
                    bit: vec![],
                    bitops: vec![],
                    bitops_int8: vec![],
                    failed: 0,
                });
                arms.len() - 1
            }
        };
        let a = &mut arms[i];
        match (r.status == "done", r.val_top1()) {
            (true, Some(v)) => {
                a.seeds.push(r.seed);
                a.val_top1.push(v);
                a.bit.extend(r.bit);
                a.bitops.extend(r.bitops);
                a.bitops_int8.extend(r.bitops_int8);
            }
            _ => a.failed += 1,
        }
    }
    for a in &mut arms {
        let n = a.val_top1.len();
        if n == 0 {
            continue;
        }
        let mean = a.val_top1.iter().sum::<f64>() / n as f64;
        let var = a.val_top1.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        a.mean = Some(mean);
        a.std = Some(var.sqrt());
        a.min = a.val_top1.iter().copied().reduce(f64::min);
        a.max = a.val_top1.iter().copied().reduce(f64::max);
    }
    arms
}

/// `summary.md`: one line per arm.
pub fn summary_markdown(arms: &[ArmSummary]) -> String {
    let list = |v: &[f64], d: usize| v.iter().map(|x| format!("{x:.d$}")).collect::<Vec<_>>().join(" / ");
    let mut md = String::from(
        "| arm | kind | seeds | bit | MBitOps (stem skipped) | MBitOps (stem int8) | val top-1 per seed | mean | std | range |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for a in arms {
        let seeds = a
            .seeds
            .iter()
            .map(|s| s.map(|s| s.to_string()).unwrap_or_else(|| "-".into()))
            .collect::<Vec<_>>()
            .join(" / ");
        let failed = if a.failed > 0 { format!(" ({} failed)", a.failed) } else { String::new() };
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        let (mean, std, range) = (f(a.mean), f(a.std), f(a.max.zip(a.min).map(|(hi, lo)| hi - lo)));
        md += &format!(
            "| {} | {} | {seeds}{failed} | {} | {} | {} | {} | {mean} | {std} | {range} |\n",
            a.arm.replace('|', "\\|"),
            a.kind,
            list(&a.bit, 3),
            list(&a.bitops, 1),
            list(&a.bitops_int8, 1),
            list(&a.val_top1, 2),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<SweepSpec> {
        let p = std::env::temp_dir().join(format!("edmips-sweep-spec-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&p, text).unwrap();
        let s = SweepSpec::load(&p);
        let _ = std::fs::remove_file(&p);
        s
    }

    const BASE: &str = "config = \"mixtiny_w1234a234\"\nbaselines = [[2, 2], [3, 3]]\nseeds = [4, 7]\n";

    #[test]
    fn seeds_repeat_every_cell_and_baseline() {
        let s = spec(&format!(
            "{BASE}[grid]\n\"train.target.value\" = [1.5, 2.5]\n[retrain]\nconfig = \"quanttiny_cfg\"\n"
        ))
        .unwrap();
        let cells = s.expand();
        let texts: Vec<String> = cells.iter().map(|c| params_text(c)).collect();
        assert_eq!(
            texts,
            [
                "train.target.value=1.5; train.seed=4",
                "train.target.value=1.5; train.seed=7",
                "train.target.value=2.5; train.seed=4",
                "train.target.value=2.5; train.seed=7"
            ]
        );
        assert_eq!(arm_and_seed(&cells[1]), ("train.target.value=1.5".to_string(), Some(7)));
        assert_eq!(s.baseline_runs(), vec![([2, 2], Some(4)), ([2, 2], Some(7)), ([3, 3], Some(4)), ([3, 3], Some(7))]);
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn without_seeds_a_sweep_runs_once_with_the_configured_seed() {
        let s = spec("config = \"mixtiny_w1234a234\"\nbaselines = [[2, 2]]\n[grid]\n\"train.lr\" = [0.1]\n[retrain]\nconfig = \"quanttiny_cfg\"\n").unwrap();
        assert_eq!(s.expand().len(), 1);
        assert_eq!(s.baseline_runs(), vec![([2, 2], None)]);
    }

    #[test]
    fn seeds_twice_or_in_two_places_are_refused_with_the_key() {
        let e = spec(&format!("{BASE}[grid]\n\"train.seed\" = [1]\n[retrain]\nconfig = \"quanttiny_cfg\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("seeds") && e.contains("train.seed"), "{e}");
        let e = spec("config = \"mixtiny_w1234a234\"\nseeds = [1, 1]\n").unwrap_err().to_string();
        assert!(e.contains("seeds") && e.contains("twice"), "{e}");
    }

    fn row(arm: &str, kind: &str, seed: u64, v: f64, status: &str) -> CellResult {
        let mut r = CellResult::new("c", kind, format!("{arm}; train.seed={seed}"), arm.into(), Some(seed));
        r.status = status.into();
        r.retrain_val_top1 = Some(v);
        r.bit = Some(2.0);
        r
    }

    #[test]
    fn the_summary_has_mean_sample_std_and_range_per_arm() {
        let rows = [
            row("a", "search", 0, 50.0, "done"),
            row("u", "baseline", 0, 40.0, "done"),
            row("a", "search", 1, 54.0, "done"),
            row("u", "baseline", 1, 41.0, "failed: x"),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].arm.as_str(), s[0].seeds.clone()), ("a", vec![Some(0), Some(1)]));
        assert_eq!(s[0].mean, Some(52.0));
        // Sample std of {50, 54}: sqrt(((−2)² + 2²) / 1).
        assert!((s[0].std.unwrap() - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!((s[0].min, s[0].max), (Some(50.0), Some(54.0)));
        assert_eq!((s[1].val_top1.clone(), s[1].std, s[1].failed), (vec![40.0], Some(0.0), 1));
        let md = summary_markdown(&s);
        assert!(md.contains("| a | search | 0 / 1 | 2.000 / 2.000 |"), "{md}");
        assert!(md.contains("| 52.00 | 2.83 | 4.00 |"), "{md}");
        assert!(md.contains("0 (1 failed)"), "{md}");
    }
}
