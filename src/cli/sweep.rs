//! `edmips sweep SWEEP.toml [DATA]`: a grid of searches and retrains (see
//! [`crate::engine::sweep`] for the file format and the outputs).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::engine::sweep::{run_sweep, SweepOptions, SweepSpec};
use crate::engine::trainer::parse_device;

/// Arguments of `edmips sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML: `config`, `[set]`, `[grid]`, `[[cells]]`, `[retrain]`, `baselines`).
    pub file: PathBuf,
    /// Data folder for every run; without it, the embedded Fashion-MNIST subset.
    pub data: Option<PathBuf>,
    /// Sweep folder [default: sweeps/<name>]. Rerun with the same folder to continue a sweep.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Data-loading threads of every run.
    #[arg(short = 'j', long = "workers")]
    pub workers: Option<usize>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `key=value` override applied last to every run of the sweep (repeatable), e.g.
    /// `--set train.epochs=1 --set train.max_steps_per_epoch=2` for a smoke-size pass over a
    /// sweep file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// Runs `edmips sweep`.
pub fn run(args: &SweepArgs) -> Result<()> {
    let spec = SweepSpec::load(&args.file)?;
    if let Some(d) = &args.data {
        if !d.exists() {
            anyhow::bail!("DATA folder `{}` does not exist", d.display());
        }
    }
    let name = spec
        .name
        .clone()
        .or_else(|| args.file.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sweep".into());
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("sweeps").join(&name));
    let interrupt = super::run_args::interrupt_flag()?;
    let opts = SweepOptions {
        out: out.clone(),
        data: args.data.clone(),
        device: parse_device(&args.device)?,
        workers: args.workers,
        sets: args.sets.clone(),
        interrupt: interrupt.clone(),
    };
    let cells = spec.len();
    println!("sweep `{name}`: {cells} cells -> {}", out.display());
    let rows = match run_sweep(&spec, &opts) {
        Ok(r) => r,
        Err(_) if interrupt.load(std::sync::atomic::Ordering::SeqCst) => {
            return Err(super::Interrupted { command: "sweep", checkpoint: out }.into())
        }
        Err(e) => return Err(e).context(format!("sweep `{}`", args.file.display())),
    };
    let failed = rows.iter().filter(|r| r.status != "done").count();
    println!(
        "\nsweep finished: {} cells, {failed} failed; results in {} (results.md/.csv/.json, summary.md/.json, pareto.svg)",
        rows.len(),
        out.display()
    );
    print!("{}", std::fs::read_to_string(out.join("results.md")).unwrap_or_default());
    println!("\nper arm, over seeds:");
    print!("{}", std::fs::read_to_string(out.join("summary.md")).unwrap_or_default());
    Ok(())
}
