//! `edmips bench data`: images per second of the train pipeline (decode, augment, normalise,
//! batch into CPU tensors) through the [`Loader`] with `workers` threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use edmips_core::error::Result;
use edmips_core::traits::backbone::InputSpec;

use super::{embedded, open, DataOptions, Loader, LoaderConfig, Split};

/// What [`bench_data`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataBenchOptions {
    /// The data set directory; `None` for the embedded Fashion-MNIST subset.
    pub path: Option<PathBuf>,
    /// How to open it.
    pub data: DataOptions,
    /// The pipeline: size, channels, augmentation style.
    pub input: InputSpec,
    /// Loader worker threads (0: the calling thread).
    pub workers: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Stop after this many batches (`None`: one whole train epoch).
    pub max_batches: Option<usize>,
    /// Seed of the order and augmentations.
    pub seed: u64,
}

impl DataBenchOptions {
    /// Options with batch size 256 (the reference's), one whole epoch, seed 0, and as many workers
    /// as the machine has cores.
    pub fn new(path: Option<PathBuf>, input: InputSpec) -> Self {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        DataBenchOptions {
            path,
            data: DataOptions::default(),
            input,
            workers,
            batch_size: 256,
            max_batches: None,
            seed: 0,
        }
    }
}

/// The result of [`bench_data`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataBenchReport {
    /// The data set (path or description).
    pub source: String,
    /// Its format (`image-folder`, `cifar-bin`, `idx`).
    pub format: String,
    /// Train samples in the data set.
    pub train_samples: usize,
    /// The pipeline measured.
    pub input: InputSpec,
    /// Worker threads.
    pub workers: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Seconds spent opening (listing and validating) the data set.
    pub open_seconds: f64,
    /// Batches produced.
    pub batches: usize,
    /// Images produced.
    pub images: usize,
    /// Undecodable images skipped (with `skip_bad`).
    pub skipped: usize,
    /// Seconds from the loader's start to the last batch.
    pub seconds: f64,
    /// `images / seconds`.
    pub images_per_sec: f64,
}

impl std::fmt::Display for DataBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {} train images): {} images in {} batches of {} ({}x{}x{}, {}) with {} workers: {:.3} s, {:.0} images/s",
            self.source,
            self.format,
            self.train_samples,
            self.images,
            self.batches,
            self.batch_size,
            self.input.channels,
            self.input.size,
            self.input.size,
            if self.input.random_resized_crop { "RandomResizedCrop" } else { "RandomCrop+pad" },
            self.workers,
            self.seconds,
            self.images_per_sec
        )?;
        if self.skipped > 0 {
            write!(f, ", {} undecodable images skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Runs the train loader over the data set of `opts` and measures its throughput.
pub fn bench_data(opts: &DataBenchOptions) -> Result<DataBenchReport> {
    let t0 = Instant::now();
    let ds = match &opts.path {
        Some(p) => open(p, &opts.data)?,
        None => embedded::fashion_mnist_subset()?,
    };
    let open_seconds = t0.elapsed().as_secs_f64();
    let cfg = LoaderConfig::new(opts.input.clone(), opts.batch_size, true, opts.seed)
        .workers(opts.workers)
        .max_batches(opts.max_batches);
    let (batches, images, skipped, seconds) = bench_split(ds.train.clone(), &cfg)?;
    Ok(DataBenchReport {
        source: ds.source.clone(),
        format: ds.format.to_string(),
        train_samples: ds.train.len(),
        input: opts.input.clone(),
        workers: opts.workers,
        batch_size: opts.batch_size,
        open_seconds,
        batches,
        images,
        skipped,
        seconds,
        images_per_sec: if seconds > 0.0 { images as f64 / seconds } else { 0.0 },
    })
}

/// Runs epoch 0 of `split` under `cfg` on the CPU; returns (batches, images, skipped, seconds).
pub fn bench_split(split: Arc<Split>, cfg: &LoaderConfig) -> Result<(usize, usize, usize, f64)> {
    let t = Instant::now();
    let (mut batches, mut images, mut skipped) = (0, 0, 0);
    for b in Loader::epoch(split, cfg, 0, &Device::Cpu)? {
        let b = b?;
        batches += 1;
        images += b.indices.len();
        skipped += b.skipped;
    }
    Ok((batches, images, skipped, t.elapsed().as_secs_f64()))
}
