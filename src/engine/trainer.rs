//! The search and retrain loops (decisions.md R15, R16).
//!
//! Search: two SGD optimisers (weights with `lr`, architecture logits with `lra`, both with
//! momentum and weight decay, D10), loss `CE + cd · complexity`, both rates ×0.1 every
//! `step_epoch`; validation every epoch on the soft mixture (D11); after every epoch the
//! architecture report. Retrain: one SGD over all parameters, CE only, a fixed-bit network
//! trained from scratch (D12).
//!
//! Every epoch ends with an atomic `checkpoint.safetensors` (and `best.safetensors` when val
//! top-1 improves, `checkpoint_ep{N}.safetensors` every `step_epoch`). Data order and
//! augmentation depend only on (seed, epoch, index), so a resumed run continues exactly: on CPU
//! the weights are bitwise identical to an uninterrupted run. A non-finite loss stops the run
//! before the optimiser step, leaving the last good checkpoint untouched; an interrupt
//! (Ctrl-C) finishes the current step and saves a checkpoint of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::arch_report::ArchReport;
use super::atomic::{copy_atomic, write_atomic};
use super::budget::{self, expected_bits, Controller};
use super::checkpoint::{self, DataIdentity, EpochPartial, RunState};
use super::metrics::{read_history, topk_hits_tensor, EpochRecord, Mean, MetricsLog, StepRecord};
use super::plots;
use super::run_config::RunConfig;
use super::run_folder::RunFolder;
use super::step::{cross_entropy, train_step, Optimizers};
use crate::data::{self, DataOptions, Dataset, Loader, LoaderConfig};
use edmips_core::error::{Error, Result};
use edmips_core::graph::{build_network, declare_graph, LayerMode, Network};
use edmips_core::traits::{ComplexityCost, RelaxContext};
use edmips_core::{FixedBits, LayerBits, QuantMode};

/// Search or retrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Mixed-precision search (`edmips search`).
    Search,
    /// Fixed-bit retraining (`edmips train`).
    Train,
}

impl RunKind {
    fn name(self) -> &'static str {
        match self {
            RunKind::Search => "search",
            RunKind::Train => "train",
        }
    }
}

/// How to run (things that are not part of the configuration).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Checkpoint to resume from (or to evaluate).
    pub resume: Option<PathBuf>,
    /// Only evaluate on the validation split.
    pub evaluate: bool,
    /// Architecture file for `*_cfg` configurations (`--ac`).
    pub arch_file: Option<PathBuf>,
    /// Set to stop after the current step (Ctrl-C).
    pub interrupt: Arc<AtomicBool>,
    /// Draw a progress bar (a terminal) instead of log lines.
    pub progress: bool,
    /// Print to stdout.
    pub verbose: bool,
    /// Epoch to start a fresh (not resumed) run at (`--start-epoch`).
    pub start_epoch: Option<usize>,
    /// Start a fresh run in a used run folder, removing the previous run's outputs (`--force`).
    pub force: bool,
}

/// Validation result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ValResult {
    /// Mean cross-entropy.
    pub ce: f64,
    /// Top-1 accuracy, percent.
    pub top1: f64,
    /// Top-5 accuracy, percent.
    pub top5: f64,
    /// Images evaluated.
    pub images: usize,
    /// Undecodable images skipped (`--skip-bad`).
    pub skipped: usize,
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The output folder.
    pub out: PathBuf,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Best validation top-1.
    pub best_acc1: f64,
    /// The last validation.
    pub last_val: Option<ValResult>,
    /// The last architecture report.
    pub report: Option<ArchReport>,
    /// Whether the run stopped on an interrupt.
    pub interrupted: bool,
    /// The checkpoint to resume from (after an interrupt: the one just saved).
    pub checkpoint: PathBuf,
    /// Whether a resume found the run already finished (nothing was trained).
    pub already_finished: bool,
}

/// Opens the run's data set: `cfg.data.path`, or the embedded Fashion-MNIST subset.
pub fn open_data(cfg: &RunConfig) -> Result<Dataset> {
    match &cfg.data.path {
        Some(p) => data::open(p, &DataOptions { format: cfg.data.format, skip_bad: cfg.data.skip_bad }),
        None => data::embedded::fashion_mnist_subset(),
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = || Error::config("--device", s, "expected cpu, cuda or cuda:N");
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = if s == "cuda" { 0 } else { s[5..].parse().map_err(|_| bad())? };
            if !cfg!(feature = "cuda") {
                return Err(Error::config(
                    "--device",
                    s,
                    "this binary was built without CUDA: rebuild with --features cuda",
                ));
            }
            Device::new_cuda(n).map_err(|e| Error::Cuda(format!("cannot open CUDA device {n}: {e}")))
        }
        _ => Err(bad()),
    }
}

/// Builds the network a run configuration describes (reading `--ac` when it needs one).
pub fn build_run_network(cfg: &RunConfig, arch_file: Option<&Path>, device: &Device) -> Result<Network> {
    let bits = match arch_file {
        Some(p) => {
            let graph = declare_graph(&cfg.model)?;
            Some(edmips_core::arch_file::load_arch_file(p, graph.searchable_layers())?)
        }
        None => None,
    };
    build_network(&cfg.model, bits.as_deref(), device, cfg.train.seed)
}

/// What one training epoch measured.
#[derive(Debug, Clone, Copy)]
struct EpochTrain {
    ce: f64,
    complexity: f64,
    top1: f64,
    images_per_s: f64,
    skipped: usize,
    interrupted: bool,
}

/// The training state of a run in progress.
struct Trainer {
    kind: RunKind,
    cfg: RunConfig,
    opts: RunOptions,
    net: Network,
    cost: Box<dyn ComplexityCost>,
    optim: Optimizers,
    data: Dataset,
    state: RunState,
    log: MetricsLog,
    history: Vec<EpochRecord>,
    _folder: Option<RunFolder>,
}

fn data_identity(d: &Dataset) -> DataIdentity {
    DataIdentity { classes: d.classes.clone(), train: d.train.len(), val: d.val.len() }
}

/// Checks the run's configuration against the command (search or train) and its options:
/// everything decided before any data is read.
fn check_run(kind: RunKind, cfg: &RunConfig, opts: &RunOptions) -> Result<()> {
    cfg.train.validate()?;
    match (kind, cfg.model.is_search()) {
        (RunKind::Search, false) => {
            return Err(Error::config(
                &cfg.config_name,
                "mode",
                "not a search configuration (use `edmips train` for it)",
            ))
        }
        (RunKind::Train, true) => {
            return Err(Error::config(&cfg.config_name, "mode", "a search configuration (use `edmips search` for it)"))
        }
        _ => {}
    }
    let reads_arch_file = matches!(cfg.model.mode, QuantMode::Fixed { bits: FixedBits::ArchFile });
    if opts.arch_file.is_some() && !reads_arch_file {
        return Err(Error::config(
            &cfg.config_name,
            "--ac",
            "this configuration does not read an architecture file (only `*_cfg` configurations do); \
             leave out --ac, or pick the `*_cfg` configuration of this network",
        ));
    }
    if opts.evaluate && opts.resume.is_none() {
        return Err(Error::config(
            "-e",
            "--resume",
            "evaluation needs the checkpoint to evaluate: pass --resume FILE (without it the network is untrained)",
        ));
    }
    Ok(())
}

/// Runs a search or a retrain (or, with `opts.evaluate`, evaluates a checkpoint).
pub fn run(kind: RunKind, mut cfg: RunConfig, opts: RunOptions) -> Result<RunSummary> {
    check_run(kind, &cfg, &opts)?;
    let data = open_data(&cfg)?;
    if data.classes.len() != cfg.model.num_classes {
        if opts.verbose {
            println!(
                "note: the data has {} classes; the classifier is built for {} (the configuration said {})",
                data.classes.len(),
                data.classes.len(),
                cfg.model.num_classes
            );
        }
        cfg.model.num_classes = data.classes.len();
    }

    let resume_path = opts.resume.clone().unwrap_or_default();
    let checkpoint = match &opts.resume {
        Some(p) => Some(checkpoint::load(p, &opts.device)?),
        None => None,
    };
    if let Some(ck) = &checkpoint {
        if ck.state.kind != kind.name() {
            return Err(Error::msg(format!(
                "checkpoint `{}` is from a {} run and cannot resume a {} run",
                resume_path.display(),
                ck.state.kind,
                kind.name()
            )));
        }
        let diffs = ck.config.differences(&cfg)?;
        if !diffs.is_empty() {
            return Err(Error::msg(format!(
                "checkpoint `{}` was made with a different configuration:\n  {}",
                resume_path.display(),
                diffs.join("\n  ")
            )));
        }
    }

    let net = build_run_network(&cfg, opts.arch_file.as_deref(), &opts.device)?;
    let cost = edmips_core::graph::build_cost(&cfg.model, net.graph(), net.mode())?;
    let (weights, logits, quant) = cfg.train.sgd_params();
    let mut optim = Optimizers::with_quant(&net, weights, (kind == RunKind::Search).then_some(logits), quant);
    let bits = if matches!(net.mode(), LayerMode::Search { .. }) { None } else { Some(net.chosen_bits()?) };
    let identity = data_identity(&data);
    let mut state = RunState {
        kind: kind.name().into(),
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        best_acc1: 0.0,
        best_epoch: None,
        partial: EpochPartial::default(),
        bits: bits.clone(),
        data: Some(identity.clone()),
        controller: None,
    };
    if let Some(ck) = checkpoint {
        let mut diffs = Vec::new();
        if let (Some(was), Some(now)) = (&ck.state.bits, &bits) {
            let layers = net.searchable_layers();
            for ((l, a), b) in layers.iter().zip(was).zip(now) {
                if a != b {
                    diffs.push(format!("layer {} `{}`: w{}a{} -> w{}a{}", l.index, l.name, a.0, a.1, b.0, b.1));
                }
            }
            if was.len() != now.len() {
                diffs.push(format!("searchable layers: {} -> {}", was.len(), now.len()));
            }
        }
        if let Some(was) = &ck.state.data {
            diffs.extend(was.differences(&identity).into_iter().map(|d| format!("data {d}")));
        }
        if !diffs.is_empty() {
            return Err(Error::msg(format!(
                "checkpoint `{}` was trained with other bits or data (check --ac and DATA):\n  {}",
                resume_path.display(),
                diffs.join("\n  ")
            )));
        }
        for p in net.params().iter() {
            let t = ck.tensors.get(&p.name).ok_or_else(|| {
                Error::msg(format!("checkpoint has no tensor `{}`: it was made for another network", p.name))
            })?;
            if t.dims() != p.var.dims() {
                return Err(Error::Shape {
                    context: format!("checkpoint tensor `{}`", p.name),
                    expected: format!("{:?}", p.var.dims()),
                    found: format!("{:?}", t.dims()),
                });
            }
            p.var.set(&t.to_dtype(p.var.dtype())?)?;
        }
        // The quantizers' `initialized` buffers were just overwritten.
        net.reset_learned_caches();
        let mut m = ck.momentum;
        for name in ["weight", "arch", "quant"] {
            if let Some(o) = optim.by_name_mut(name) {
                o.set_buffers(m.remove(name).unwrap_or_default());
            }
        }
        state = RunState { bits, data: Some(identity), ..ck.state };
    } else if let Some(e) = opts.start_epoch {
        state.epoch = e;
    }
    if kind == RunKind::Search {
        if let Some(t) = &cfg.train.target {
            // Fails early, naming the cost's metrics, when the target's metric is unknown.
            let layers = net.searchable_layers();
            t.measure(cost.as_ref(), layers, &vec![LayerBits { wbit: 2.0, abit: 2.0 }; layers.len()])?;
            if state.controller.is_none() {
                state.controller = Some(Controller::new(cfg.train.complexity_decay));
            }
        }
    }

    let metrics = opts.out.join("metrics.jsonl");
    let log = MetricsLog::new(&metrics);
    if opts.evaluate {
        // Evaluation reads the checkpoint and writes nothing.
        let tr = Trainer { kind, cfg, opts, net, cost, optim, data, state, log, history: vec![], _folder: None };
        let v = tr.validate()?;
        tr.say(format!(
            "val: ce {:.4}  top-1 {:.2}%  top-5 {:.2}%  ({} images{})",
            v.ce,
            v.top1,
            v.top5,
            v.images,
            skipped_note(v.skipped)
        ));
        return Ok(tr.summary(Some(v), None, false));
    }

    let folder = RunFolder::acquire(&opts.out, opts.resume.as_deref(), opts.force)?;
    let resolved = toml::to_string_pretty(&cfg).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&opts.out.join("config.resolved.toml"), resolved.as_bytes())?;
    log.truncate_to(state.epoch, state.global_step)?;
    let history = read_history(&metrics);
    let mut tr = Trainer { kind, cfg, opts, net, cost, optim, data, state, log, history, _folder: Some(folder) };
    tr.run()
}

fn skipped_note(n: usize) -> String {
    if n > 0 {
        format!(", {n} undecodable skipped")
    } else {
        String::new()
    }
}

impl Trainer {
    fn say(&self, s: impl AsRef<str>) {
        if self.opts.verbose {
            println!("{}", s.as_ref());
        }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.opts.out.join("checkpoint.safetensors")
    }

    fn run(&mut self) -> Result<RunSummary> {
        let epochs = self.cfg.train.epochs;
        self.say(format!(
            "{} {} on {} ({} train / {} val images, {} classes) -> {}",
            self.kind.name(),
            self.cfg.config_name,
            self.data.source,
            self.data.train.len(),
            self.data.val.len(),
            self.data.classes.len(),
            self.opts.out.display()
        ));
        let mut report = None;
        if self.state.epoch == 0 && self.state.step_in_epoch == 0 {
            let r = ArchReport::new(&self.cfg.config_name, 0, &self.net, self.cost.as_ref())?;
            self.say(format!("initial architecture:\n{}", r.table()));
        }
        if self.opts.resume.is_some() && self.state.step_in_epoch == 0 && self.state.epoch > 0 {
            // A crash between the epoch's checkpoint and the files it owes leaves them stale or
            // missing: write them again from the checkpoint's state.
            let r = self.report(self.state.epoch)?;
            self.epoch_outputs(&r, self.state.best_epoch == Some(self.state.epoch))?;
            report = Some(r);
        }
        if self.state.epoch >= epochs {
            self.say(format!(
                "this run has already finished its {epochs} epochs ({}); nothing to do. \
                 To train longer, resume with a larger --epochs.",
                self.checkpoint_path().display()
            ));
            let mut s = self.summary(None, report, false);
            s.already_finished = true;
            return Ok(s);
        }
        let mut last_val = None;
        while self.state.epoch < epochs {
            let epoch = self.state.epoch;
            let train = self.train_epoch(epoch)?;
            if train.interrupted {
                let path = self.checkpoint_path();
                self.save(&path)?;
                self.say(format!(
                    "interrupted: saved epoch {}/{epochs} after step {} to {}",
                    epoch + 1,
                    self.state.step_in_epoch,
                    path.display()
                ));
                return Ok(self.summary(last_val, report, true));
            }
            let v = self.validate()?;
            if !v.ce.is_finite() {
                return Err(Error::NonFinite(format!(
                    "validation loss ({}) after epoch {}/{epochs} (step {}); stopped before saving it. \
                     The last good checkpoint is {} (if any).",
                    v.ce,
                    epoch + 1,
                    self.state.step_in_epoch,
                    self.checkpoint_path().display()
                )));
            }
            self.check_parameters(epoch)?;
            let r = self.report(epoch + 1)?;
            self.state.epoch += 1;
            self.state.step_in_epoch = 0;
            self.state.partial = EpochPartial::default();
            let is_best = v.top1 > self.state.best_acc1 || self.state.best_epoch.is_none();
            if is_best {
                self.state.best_acc1 = self.state.best_acc1.max(v.top1);
                self.state.best_epoch = Some(self.state.epoch);
            }
            let rec = EpochRecord {
                kind: "epoch".into(),
                epoch,
                lr: self.cfg.train.lr_at(epoch),
                lra: self.cfg.train.lra_at(epoch),
                train_ce: train.ce,
                complexity: train.complexity,
                train_top1: train.top1,
                val_ce: v.ce,
                val_top1: v.top1,
                val_top5: v.top5,
                bit: r.argmax.headline.value,
                bit_expected: r.expected.as_ref().map(|e| e.headline.value),
                images_per_s: train.images_per_s,
                skipped: train.skipped,
                val_skipped: v.skipped,
                global_step: self.state.global_step,
                cd: self.cd(),
            };
            self.say(format!(
                "epoch {}/{epochs}: train ce {:.4} top-1 {:.2}% | val ce {:.4} top-1 {:.2}% top-5 {:.2}% | {:.1} img/s{}{}",
                epoch + 1,
                train.ce,
                train.top1,
                v.ce,
                v.top1,
                v.top5,
                train.images_per_s,
                if train.skipped > 0 { format!(" | {} bad train images skipped", train.skipped) } else { String::new() },
                if v.skipped > 0 { format!(" | {} bad val images skipped", v.skipped) } else { String::new() }
            ));
            self.say(r.table());
            // The checkpoint first: the files after it can always be rewritten from it.
            self.save(&self.checkpoint_path())?;
            self.log.write(&rec)?;
            self.history.push(rec);
            self.epoch_outputs(&r, is_best)?;
            last_val = Some(v);
            report = Some(r);
        }
        Ok(self.summary(last_val, report, false))
    }

    /// The complexity weight of the next step: the controller's in a search with a target,
    /// else the configured `cd` (0 in a retrain).
    fn cd(&self) -> f64 {
        match (&self.state.controller, self.kind) {
            (Some(c), RunKind::Search) => c.cd,
            (None, RunKind::Search) => self.cfg.train.complexity_decay,
            _ => 0.0,
        }
    }

    /// The architecture report after `done` epochs; after the last epoch of a search with a
    /// target, with the budget repair applied (so `arch.json` holds the architecture to retrain).
    fn report(&self, done: usize) -> Result<ArchReport> {
        let mut r = ArchReport::new(&self.cfg.config_name, done, &self.net, self.cost.as_ref())?;
        if let (RunKind::Search, Some(t)) = (self.kind, &self.cfg.train.target) {
            if done >= self.cfg.train.epochs {
                r.repair = budget::repair(&mut r, self.net.searchable_layers(), self.cost.as_ref(), t)?;
            }
        }
        Ok(r)
    }

    /// The files a finished epoch owes besides `checkpoint.safetensors` (which must already
    /// hold it): `arch.json`, the plots, `best.safetensors` when it was the best, and
    /// `checkpoint_ep{N}` every `step_epoch`. Idempotent, so a resume after a crash calls it
    /// again.
    fn epoch_outputs(&self, r: &ArchReport, is_best: bool) -> Result<()> {
        let done = self.state.epoch;
        let arch_json = serde_json::to_string_pretty(r).map_err(|e| Error::msg(e.to_string()))?;
        write_atomic(&self.opts.out.join("arch.json"), arch_json.as_bytes())?;
        let ck = self.checkpoint_path();
        let best = self.opts.out.join("best.safetensors");
        if is_best && checkpoint::read_state(&best).map(|s| s.epoch != done).unwrap_or(true) {
            copy_atomic(&ck, &best)?;
        }
        if done.is_multiple_of(self.cfg.train.step_epoch) {
            let per_epoch = self.opts.out.join(format!("checkpoint_ep{done}.safetensors"));
            if checkpoint::read_state(&per_epoch).map(|s| s.epoch != done).unwrap_or(true) {
                copy_atomic(&ck, &per_epoch)?;
            }
        }
        plots::write_all(&self.opts.out, &self.history, r)
    }

    /// Every trainable tensor must be finite at the end of an epoch, or the run stops before
    /// anything is saved from it.
    fn check_parameters(&self, epoch: usize) -> Result<()> {
        for p in self.net.params().iter() {
            let s = p.var.as_tensor().sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !s.is_finite() {
                return Err(Error::NonFinite(format!(
                    "parameter `{}` after epoch {}/{} (step {}); stopped before saving it. The last good checkpoint is {} (if any).",
                    p.name,
                    epoch + 1,
                    self.cfg.train.epochs,
                    self.state.step_in_epoch,
                    self.checkpoint_path().display()
                )));
            }
        }
        Ok(())
    }

    fn summary(&self, last_val: Option<ValResult>, report: Option<ArchReport>, interrupted: bool) -> RunSummary {
        RunSummary {
            out: self.opts.out.clone(),
            epochs_done: self.state.epoch,
            best_acc1: self.state.best_acc1,
            last_val,
            report,
            interrupted,
            checkpoint: self.checkpoint_path(),
            already_finished: false,
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> =
            self.net.params().iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect();
        let momentum: Vec<(&str, &HashMap<String, Tensor>)> =
            self.optim.named().into_iter().map(|(n, o)| (n, o.buffers())).collect();
        checkpoint::save(path, &self.state, &self.cfg, &tensors, &momentum)
    }

    fn loader_config(&self, train: bool) -> LoaderConfig {
        let t = &self.cfg.train;
        let graph_input = self.net.graph().input.clone();
        LoaderConfig::new(graph_input, t.batch_size, train, t.seed).workers(t.workers.max(1))
    }

    /// One training epoch from `state.step_in_epoch`, continuing the epoch's running sums of a
    /// resumed checkpoint.
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochTrain> {
        let t = self.cfg.train.clone();
        self.optim.weights.lr = t.lr_at(epoch);
        if let Some(a) = self.optim.logits.as_mut() {
            a.lr = t.lra_at(epoch);
        }
        if let Some(q) = self.optim.quant.as_mut() {
            q.lr = t.quant_lr_at(epoch);
        }
        // The loader counts `max_batches` from `start_batch`: pass what is left of the epoch's cap.
        let left = t.max_steps_per_epoch.map(|m| m.saturating_sub(self.state.step_in_epoch));
        let cfg = self.loader_config(true).start_batch(self.state.step_in_epoch).max_batches(left);
        let total = self.state.step_in_epoch + Loader::batches_to_yield(self.data.train.len(), &cfg);
        let mut iter = Loader::epoch(self.data.train.clone(), &cfg, epoch as u64, &self.opts.device)?;
        let bar = self.progress_bar(total as u64, epoch);
        let mut images = 0usize;
        let start = Instant::now();
        let summary = |p: &EpochPartial, ips: f64, interrupted: bool| EpochTrain {
            ce: p.ce.get(),
            complexity: p.complexity.get(),
            top1: p.top1.get(),
            images_per_s: ips,
            skipped: p.skipped,
            interrupted,
        };
        for batch in iter.by_ref() {
            let batch = batch?;
            self.state.partial.skipped += batch.skipped;
            let n = batch.labels.dims1()?;
            let ctx = RelaxContext::train(epoch, self.state.global_step, t.seed);
            let cd = self.cd();
            let out =
                train_step(&self.net, self.cost.as_ref(), &mut self.optim, &batch.images, &batch.labels, &ctx, cd)
                    .map_err(|e| match e {
                        Error::NonFinite(what) => Error::NonFinite(format!(
                            "{what} at epoch {}/{}, step {}; stopped before the update. \
                         The last good checkpoint is {} (if any); lower --lr or check the data.",
                            epoch + 1,
                            t.epochs,
                            self.state.step_in_epoch + 1,
                            self.checkpoint_path().display()
                        )),
                        e => e,
                    })?;
            if let (Some(c), Some(target)) = (self.state.controller.as_mut(), &t.target) {
                c.update(
                    target,
                    target.measure(self.cost.as_ref(), self.net.searchable_layers(), &expected_bits(&self.net)?)?,
                );
            }
            let (h1, h5) = (out.top1_hits, out.top5_hits);
            let p = &mut self.state.partial;
            p.ce.add(out.ce, n);
            p.complexity.add(out.complexity, n);
            p.top1.add(100.0 * h1 as f64 / n as f64, n);
            p.top5.add(100.0 * h5 as f64 / n as f64, n);
            images += n;
            self.state.step_in_epoch += 1;
            self.state.global_step += 1;
            let ips = images as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let step = self.state.step_in_epoch;
            let p = &self.state.partial;
            if let Some(b) = &bar {
                b.set_message(format!("ce {:.3} top-1 {:.1}% {:.0} img/s", p.ce.get(), p.top1.get(), ips));
                b.inc(1);
            }
            if step.is_multiple_of(t.print_freq.max(1)) || step == total {
                self.log.write(&StepRecord {
                    kind: "step",
                    epoch,
                    step,
                    global_step: self.state.global_step,
                    lr: self.optim.weights.lr,
                    lra: self.optim.logits_lr(),
                    ce: p.ce.get(),
                    complexity: p.complexity.get(),
                    top1: p.top1.get(),
                    top5: p.top5.get(),
                    cd: self.cd(),
                    images_per_s: ips,
                })?;
                if bar.is_none() {
                    self.say(format!(
                        "epoch {}/{} [{step:>5}/{total}] lr {:.5} ce {:.4} complexity {:.3}{} top-1 {:.2}% top-5 {:.2}% {:.1} img/s",
                        epoch + 1,
                        t.epochs,
                        self.optim.weights.lr,
                        p.ce.get(),
                        p.complexity.get(),
                        match &self.state.controller {
                            Some(c) => format!(
                                " cd {:.5} ({} {:.3})",
                                c.cd,
                                t.target.as_ref().map(|x| x.metric.as_str()).unwrap_or("metric"),
                                c.last_metric.unwrap_or(f64::NAN)
                            ),
                            None => String::new(),
                        },
                        p.top1.get(),
                        p.top5.get(),
                        ips
                    ));
                }
            }
            if self.opts.interrupt.load(Ordering::SeqCst) {
                if let Some(b) = bar {
                    b.abandon();
                }
                return Ok(summary(&self.state.partial, ips, true));
            }
        }
        self.state.partial.skipped += iter.trailing_skipped();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if self.state.partial.ce.count() == 0.0 {
            return Err(Error::Data(format!(
                "epoch {}/{}: no usable training image ({} of {} skipped as undecodable with --skip-bad); \
                 stopping instead of saving an untrained network",
                epoch + 1,
                t.epochs,
                self.state.partial.skipped,
                self.data.train.len()
            )));
        }
        let ips = images as f64 / start.elapsed().as_secs_f64().max(1e-9);
        Ok(summary(&self.state.partial, ips, false))
    }

    fn progress_bar(&self, total: u64, epoch: usize) -> Option<indicatif::ProgressBar> {
        if !(self.opts.progress && self.opts.verbose) {
            return None;
        }
        let b = indicatif::ProgressBar::new(total);
        b.set_position(self.state.step_in_epoch as u64);
        let style =
            indicatif::ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b.set_prefix(format!("{}/{}", epoch + 1, self.cfg.train.epochs));
        Some(b)
    }

    fn validate(&self) -> Result<ValResult> {
        let cfg = self.loader_config(false).max_batches(self.cfg.train.max_val_batches);
        let mut iter = Loader::epoch(self.data.val.clone(), &cfg, 0, &self.opts.device)?;
        let (mut ce_m, mut n_all, mut h1, mut h5, mut skipped) = (Mean::default(), 0usize, 0usize, 0usize, 0usize);
        let ctx = RelaxContext::eval();
        for batch in iter.by_ref() {
            let batch = batch?;
            skipped += batch.skipped;
            let n = batch.labels.dims1()?;
            let fwd = self.net.forward(&batch.images, false, &ctx)?;
            let logits = fwd.logits.detach();
            // One host read per batch: [ce, top-1 hits, top-5 hits].
            let ce = cross_entropy(&logits, &batch.labels)?.to_dtype(DType::F64)?.reshape(1)?;
            let hits = topk_hits_tensor(&logits, &batch.labels)?.to_dtype(DType::F64)?;
            let v = Tensor::cat(&[&ce, &hits], 0)?.to_vec1::<f64>()?;
            let (ce, a, b) = (v[0], v[1] as usize, v[2] as usize);
            ce_m.add(ce, n);
            n_all += n;
            h1 += a;
            h5 += b;
        }
        skipped += iter.trailing_skipped();
        if n_all == 0 {
            return Err(Error::Data(format!(
                "validation: no usable image ({skipped} of {} skipped as undecodable with --skip-bad); \
                 an accuracy over no images would be meaningless",
                self.data.val.len()
            )));
        }
        let pct = |h: usize| 100.0 * h as f64 / n_all as f64;
        Ok(ValResult { ce: ce_m.get(), top1: pct(h1), top5: pct(h5), images: n_all, skipped })
    }
}
