//! `edmips train`: retrain a fixed-bit network from scratch (the reference's `main.py`).

use std::path::PathBuf;

use crate::engine::{run, RunKind};
use anyhow::Result;
use clap::Args;

use super::run_args::RunArgs;

/// Arguments of `edmips train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Architecture file for `quant*_cfg`: the `arch.json` that search writes, or a JSON list of
    /// `[wbit, abit]` pairs.
    #[arg(long = "ac", visible_alias = "arch-cfg")]
    arch_cfg: Option<PathBuf>,
}

/// Runs `edmips train`.
pub fn run_train(args: &TrainArgs) -> Result<()> {
    let cfg = args.run.resolve(RunKind::Train, |_| {})?;
    if let Some(p) = &args.arch_cfg {
        if !p.is_file() {
            anyhow::bail!("--ac `{}`: no such architecture file", p.display());
        }
    }
    let opts = args.run.options(&cfg, args.arch_cfg.clone())?;
    let summary = run(RunKind::Train, cfg, opts)?;
    if summary.interrupted {
        return Err(super::Interrupted { command: "train", checkpoint: summary.checkpoint }.into());
    }
    if !args.run.evaluate && !summary.already_finished {
        println!(
            "\ntraining finished after {} epochs: best val top-1 {:.2}%; checkpoints in {}",
            summary.epochs_done,
            summary.best_acc1,
            summary.out.display()
        );
    }
    Ok(())
}
