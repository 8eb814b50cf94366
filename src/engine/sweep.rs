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
//! ```
//!
//! Each cell gets a folder `cell-NNN/` with `search/` and `retrain/` run folders and, once
//! finished, `result.json`; each baseline `baseline-wWaA/`. The sweep folder holds
//! `results.csv`, `results.json`, `results.md` (rewritten after every cell) and `pareto.svg`
//! (val top-1 against the chosen architecture's cost metric: one colour per combination of the
//! non-budget keys, the baselines as a line). A rerun with the same `--out` skips finished
//! cells, resumes a killed run from its checkpoint (exactly, since runs resume bitwise), and
//! retries failed ones; a failing cell is recorded with its error and the sweep goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use edmips_core::error::{Error, Result};
use edmips_core::graph::declare_graph;

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
        if !spec.baselines.is_empty() && spec.retrain.is_none() {
            return Err(Error::config(
                path.display().to_string(),
                "baselines",
                "baselines are retrained: add a [retrain] table naming the *_cfg configuration",
            ));
        }
        Ok(spec)
    }

    /// The cells: each a list of (dotted key, value), in a stable order.
    pub fn expand(&self) -> Vec<Vec<(String, toml::Value)>> {
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
    /// Stop after the current step of the current run (Ctrl-C); a rerun continues.
    pub interrupt: Arc<AtomicBool>,
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// `cell-NNN` or `baseline-wWaA`.
    pub cell: String,
    /// `search` (a cell) or `baseline`.
    pub kind: String,
    /// The cell's keys and values, `key=value` joined by `; `.
    pub params: String,
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
    /// The chosen architecture's BitOps (the cost's `bitops` metric, when it has one).
    pub bitops: Option<f64>,
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
    fn new(cell: &str, kind: &str, params: String) -> Self {
        CellResult {
            cell: cell.into(),
            kind: kind.into(),
            params,
            status: String::new(),
            search_train_top1: None,
            search_val_top1: None,
            search_val_top5: None,
            retrain_train_top1: None,
            retrain_val_top1: None,
            retrain_val_top5: None,
            bitops: None,
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

fn fill_cost(r: &mut CellResult, report: &ArchReport) {
    r.bitops = report.argmax.get("bitops");
    r.bit = report.argmax.get("bit");
    r.size = report.argmax.get("bitw");
}

fn read_result(p: &Path) -> Option<CellResult> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// Runs a sweep; returns every row (cells, then baselines). Stops early (with an error) only
/// on an interrupt; other failures are recorded in their row.
pub fn run_sweep(spec: &SweepSpec, o: &SweepOptions) -> Result<Vec<CellResult>> {
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io("creating sweep folder", &o.out, e))?;
    let cells = spec.expand();
    let n = cells.len() + spec.baselines.len();
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
        if let Some(r) = read_result(&result_path).filter(|r| r.status == "done") {
            println!("sweep: {name} ({}/{n}) [{params}]: done before, skipped", i + 1);
            rows.push(r);
            continue;
        }
        println!("sweep: {name} ({}/{n}) [{params}]: search", i + 1);
        let prior = read_result(&dir.join("partial.json")).map(|r| r.wall_s).unwrap_or(0.0);
        let t0 = Instant::now();
        let cell_sets: Vec<String> = cell.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut row = CellResult::new(&name, "search", params.clone());
        let outcome = (|| -> Result<()> {
            let cfg = run_config(&spec.config, o.data.as_deref(), &[base_sets.clone(), cell_sets.clone()])?;
            let ((tr, v1, v5, ips), report) = run_folder(RunKind::Search, cfg, &dir.join("search"), None, o)?;
            (row.search_train_top1, row.search_val_top1, row.search_val_top5, row.images_per_s) =
                (Some(tr), Some(v1), Some(v5), Some(ips));
            fill_cost(&mut row, &report);
            if let Some(rt) = &spec.retrain {
                println!("sweep: {name} ({}/{n}): retrain with {}", i + 1, rt.config);
                let cfg = run_config(
                    &rt.config,
                    o.data.as_deref(),
                    &[base_sets.clone(), cell_sets.clone(), overrides(&rt.set)],
                )?;
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
    for (j, &[w, a]) in spec.baselines.iter().enumerate() {
        let k = cells.len() + j + 1;
        let name = format!("baseline-w{w}a{a}");
        let dir = o.out.join(&name);
        let result_path = dir.join("result.json");
        let params = format!("uniform w{w}a{a}");
        if let Some(r) = read_result(&result_path).filter(|r| r.status == "done") {
            println!("sweep: {name} ({k}/{n}): done before, skipped");
            rows.push(r);
            continue;
        }
        let Some(rt) = &spec.retrain else { break };
        println!("sweep: {name} ({k}/{n}): retrain {} at uniform w{w}a{a}", rt.config);
        let t0 = Instant::now();
        let mut row = CellResult::new(&name, "baseline", params);
        let outcome = (|| -> Result<()> {
            let cfg = run_config(&rt.config, o.data.as_deref(), &[base_sets.clone(), overrides(&rt.set)])?;
            let layers = declare_graph(&cfg.model)?.searchable_layers().len();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
            let arch = dir.join("uniform.json");
            let bits: Vec<[u32; 2]> = vec![[w, a]; layers];
            write_atomic(&arch, serde_json::to_string(&bits).map_err(|e| Error::msg(e.to_string()))?.as_bytes())?;
            let ((tr, v1, v5, ips), report) = run_folder(RunKind::Train, cfg, &dir.join("retrain"), Some(arch), o)?;
            (row.retrain_train_top1, row.retrain_val_top1, row.retrain_val_top5, row.images_per_s) =
                (Some(tr), Some(v1), Some(v5), Some(ips));
            fill_cost(&mut row, &report);
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
pub const COLUMNS: [&str; 15] = [
    "cell",
    "kind",
    "params",
    "status",
    "search_train_top1",
    "search_val_top1",
    "search_val_top5",
    "retrain_train_top1",
    "retrain_val_top1",
    "retrain_val_top5",
    "bitops",
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
        r.status.clone(),
        opt(r.search_train_top1, 2),
        opt(r.search_val_top1, 2),
        opt(r.search_val_top5, 2),
        opt(r.retrain_train_top1, 2),
        opt(r.retrain_val_top1, 2),
        opt(r.retrain_val_top5, 2),
        opt(r.bitops, 4),
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
    write_atomic(&out.join("pareto.svg"), super::plots::pareto(rows)?.as_bytes())
}
