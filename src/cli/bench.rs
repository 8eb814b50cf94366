//! `edmips bench step` (one training step) and `edmips bench data` (the input pipeline).

use std::path::PathBuf;

use crate::data::{bench_data, DataBenchOptions, DataFormat, DataOptions};
use crate::engine::bench::bench_step;
use crate::engine::trainer::parse_device;
use crate::engine::RunConfig;
use anyhow::Result;
use clap::{Args, Subcommand};

use super::run_args::positive;

/// Arguments of `edmips bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Time one training step (search for mix configurations, retrain for quant ones).
    Step {
        /// Named configuration.
        #[arg(short = 'a', long = "arch")]
        arch: String,
        /// Batch size.
        #[arg(short = 'b', long = "batch-size", default_value_t = 8, value_parser = positive)]
        batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 5, value_parser = positive)]
        iters: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Device: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Override configuration values (as `--set` of search/train).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Images per second of the training input pipeline (decode, augment, batch).
    Data {
        /// Data folder; without it, the embedded Fashion-MNIST subset.
        data: Option<PathBuf>,
        /// Named configuration whose input size and augmentation to use.
        #[arg(short = 'a', long = "arch", default_value = "mixres20_w1234a234")]
        arch: String,
        /// Loader threads.
        #[arg(short = 'j', long = "workers", default_value_t = 2)]
        workers: usize,
        /// Batch size.
        #[arg(short = 'b', long = "batch-size", default_value_t = 256, value_parser = positive)]
        batch: usize,
        /// Stop after this many batches (default: one epoch).
        #[arg(long = "max-batches", value_parser = positive)]
        max_batches: Option<usize>,
        /// Data format instead of detecting it.
        #[arg(long = "data-format")]
        data_format: Option<DataFormat>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `edmips bench`.
pub fn run_bench(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchWhat::Step { arch, batch, iters, warmup, device, set, json } => {
            let cfg = RunConfig::named(arch)?.with_overrides(set)?;
            let dev = parse_device(device)?;
            let r = bench_step(&cfg, *batch, *iters, *warmup, &dev)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} ({}) batch {} on {}: median {:.1} ms (min {:.1}, max {:.1}) over {} steps = {:.1} images/s",
                    r.config, r.kind, r.batch, r.device, r.median_ms, r.min_ms, r.max_ms, r.iters, r.images_per_s
                );
            }
        }
        BenchWhat::Data { data, arch, workers, batch, max_batches, data_format, json } => {
            let mut cfg = RunConfig::named(arch)?;
            if data.is_none() {
                super::default_job::fit_embedded_data(&mut cfg);
            }
            let graph = edmips_core::graph::declare_graph(&cfg.model)?;
            let mut o = DataBenchOptions::new(data.clone(), graph.input.clone());
            o.data = DataOptions { format: *data_format, skip_bad: false };
            o.workers = *workers;
            o.batch_size = *batch;
            o.max_batches = *max_batches;
            let r = bench_data(&o)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{r}");
            }
        }
    }
    Ok(())
}
