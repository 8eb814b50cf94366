//! Flags shared by `edmips search` and `edmips train` (the reference's, plus ours), and their
//! resolution into a [`RunConfig`] and [`RunOptions`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::default_job;
use crate::data::DataFormat;
use crate::engine::{RunConfig, RunKind, RunOptions};
use anyhow::{Context, Result};
use clap::Args;

/// Parses a count that must be at least 1 (clap names the flag in its error).
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would make the run empty)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number: {e}")),
    }
}

/// Flags common to search and train.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Data folder (ImageFolder `train/` + `val/`, CIFAR-10 binary or IDX files). Without it,
    /// the embedded Fashion-MNIST subset (the default job).
    pub data: Option<PathBuf>,
    /// Named configuration (see `edmips list --kind config`).
    #[arg(short = 'a', long = "arch")]
    pub arch: Option<String>,
    /// Number of epochs [default: 90; default job: 2].
    #[arg(long, value_parser = positive)]
    pub epochs: Option<usize>,
    /// Multiply the learning rates by 0.1 every this many epochs [default: 30; default job: 1].
    #[arg(long = "step-epoch", value_parser = positive)]
    pub step_epoch: Option<usize>,
    /// Epoch to start at (affects the learning-rate schedule) when not resuming.
    #[arg(long = "start-epoch")]
    pub start_epoch: Option<usize>,
    /// Mini-batch size [default: 256; default job: 128].
    #[arg(short = 'b', long = "batch-size", value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Learning rate of the weights [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Weight decay [default: 1e-4].
    #[arg(long = "wd", visible_alias = "weight-decay", allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Learning rate of learnable quantizer parameters (LSQ steps, PACT clips) [default: --lr].
    #[arg(long = "lrq", allow_negative_numbers = true)]
    pub quant_lr: Option<f64>,
    /// Weight decay of learnable quantizer parameters (PACT's L2 term) [default: --wd].
    #[arg(long = "wdq", allow_negative_numbers = true)]
    pub quant_weight_decay: Option<f64>,
    /// Data-loading threads [default: 4].
    #[arg(short = 'j', long = "workers")]
    pub workers: Option<usize>,
    /// Log every this many steps [default: 100].
    #[arg(short = 'p', long = "print-freq")]
    pub print_freq: Option<usize>,
    /// Resume from (or, with -e, evaluate) this checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Only evaluate on the validation split.
    #[arg(short = 'e', long)]
    pub evaluate: bool,
    /// Seed of initialisation, data order and augmentation [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/<arch>-<UTC timestamp>]. A run owns its folder: a fresh
    /// run needs an empty one (see --force); --resume continues in the checkpoint's folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start a fresh run in a used run folder, removing the outputs a previous run wrote there.
    #[arg(long)]
    pub force: bool,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A TOML run configuration (full or partial) merged over the named configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one configuration value, e.g. `--set train.lr=0.05` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Data format instead of detecting it: image-folder, cifar-bin or idx.
    #[arg(long = "data-format")]
    pub data_format: Option<DataFormat>,
    /// Skip (and count) undecodable images instead of stopping.
    #[arg(long = "skip-bad")]
    pub skip_bad: bool,
    /// Stop each epoch after this many steps (smoke tests).
    #[arg(long = "max-steps", value_parser = positive)]
    pub max_steps: Option<usize>,
    /// Validate on at most this many batches (smoke tests).
    #[arg(long = "max-val-batches", value_parser = positive)]
    pub max_val_batches: Option<usize>,
}

impl RunArgs {
    /// Whether this is the default job (no DATA: the embedded data set).
    pub fn default_job(&self) -> bool {
        self.data.is_none()
    }

    /// Resolves the configuration of a `kind` run: named config, default-job preset
    /// ([`default_job::apply`]), `--config`, flags, `--set`. `extra` applies command-specific
    /// flags.
    pub fn resolve(&self, kind: RunKind, extra: impl FnOnce(&mut RunConfig)) -> Result<RunConfig> {
        let name = self.arch.clone().unwrap_or_else(|| default_job::config_for(kind).to_string());
        let mut cfg = RunConfig::named(&name)?;
        if self.default_job() {
            default_job::apply(&mut cfg, kind);
        }
        if let Some(p) = &self.config {
            cfg = cfg.merge_file(p)?;
        }
        let t = &mut cfg.train;
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => { $( if let Some(v) = self.$flag { t.$field = v; } )* };
        }
        set!(epochs => epochs, step_epoch => step_epoch, batch_size => batch_size, lr => lr, momentum => momentum,
             weight_decay => weight_decay, workers => workers, print_freq => print_freq, seed => seed);
        if self.quant_lr.is_some() {
            t.quant_lr = self.quant_lr;
        }
        if self.quant_weight_decay.is_some() {
            t.quant_weight_decay = self.quant_weight_decay;
        }
        if self.max_steps.is_some() {
            t.max_steps_per_epoch = self.max_steps;
        }
        if self.max_val_batches.is_some() {
            t.max_val_batches = self.max_val_batches;
        }
        cfg.data.path = self.data.clone();
        if self.data_format.is_some() {
            cfg.data.format = self.data_format;
        }
        cfg.data.skip_bad |= self.skip_bad;
        extra(&mut cfg);
        let cfg = cfg.with_overrides(&self.set)?;
        if let Some(p) = &self.data {
            if !p.exists() {
                anyhow::bail!("DATA folder `{}` does not exist", p.display());
            }
        }
        if let Some(p) = &self.resume {
            if !p.is_file() {
                anyhow::bail!("--resume `{}`: no such checkpoint file", p.display());
            }
        }
        Ok(cfg)
    }

    /// Run options: output folder, device, resume, Ctrl-C flag.
    pub fn options(&self, cfg: &RunConfig, arch_file: Option<PathBuf>) -> Result<RunOptions> {
        let out = match (&self.out, &self.resume) {
            (Some(o), _) => o.clone(),
            // Resuming continues in the checkpoint's folder.
            (None, Some(r)) => r.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")),
            (None, None) => PathBuf::from("runs").join(format!("{}-{}", cfg.config_name, utc_timestamp())),
        };
        let device = crate::engine::trainer::parse_device(&self.device)?;
        Ok(RunOptions {
            out,
            device,
            resume: self.resume.clone(),
            evaluate: self.evaluate,
            arch_file,
            interrupt: interrupt_flag()?,
            progress: std::io::stderr().is_terminal(),
            verbose: true,
            start_epoch: self.start_epoch,
            force: self.force,
        })
    }
}

/// A flag set by the first Ctrl-C (the run saves and stops after the current step); a second
/// Ctrl-C exits at once.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and saving a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(flag)
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
