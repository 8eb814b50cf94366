//! [`Loader`]: batches of decoded, augmented, normalised samples, built by worker threads.
//!
//! **Determinism.** The sample order of an epoch is `0..n` for val and, for train, the
//! permutation drawn from `Rng::derive(seed, &[SHUFFLE, epoch])`; sample `i` is augmented with
//! `Rng::derive(seed, &[AUGMENT, epoch, i])`. Nothing else is random, so a batch depends on
//! `(seed, epoch, batch index)` and the data only, never on the number of workers or on timing,
//! and resuming at `start_batch` gives exactly the batches an uninterrupted epoch would have.
//!
//! **Parallelism.** With `workers = 0` batches are built on the calling thread when asked for.
//! With `workers ≥ 1`, that many threads each build whole batches (decode, augment, normalise,
//! like PyTorch's `DataLoader` workers), taking batch numbers in order; the consumer gets them
//! back in order. At most `workers + prefetch` batches are in flight or waiting at any time,
//! which bounds memory. Tensors are created on the consumer's thread (on its device).
//!
//! **Bad samples.** A sample that fails to decode ends the epoch with an error naming its file,
//! unless its split has [`Split::skip_bad`]: then it is left out of its batch, counted in
//! [`Batch::skipped`] and remembered in [`Split::bad_samples`]. A batch left with no sample is not
//! yielded; its count is carried to the next batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};

use edmips_core::error::{Error, Result};
use edmips_core::init::Rng;
use edmips_core::traits::backbone::InputSpec;

use super::transforms::Transform;
use super::Split;

/// Label that separates the shuffle's random stream from the augmentations'.
const SHUFFLE: u64 = 0x5348_5546_464c_4531; // "SHUFFLE1"
/// Label of the per-sample augmentation streams.
const AUGMENT: u64 = 0x4155_474d_454e_5431; // "AUGMENT1"

/// How a [`Loader`] builds an epoch's batches. [`LoaderConfig::new`] gives the defaults
/// (no workers, prefetch 2, keep the last partial batch, whole epoch); the builder methods change
/// one field each.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// The network's input: size, channels, normalisation, augmentation style.
    pub input: InputSpec,
    /// Samples per batch.
    pub batch_size: usize,
    /// Train (shuffled order, random augmentation) or val (file order, deterministic transform).
    pub train: bool,
    /// The seed of the order and augmentations.
    pub seed: u64,
    /// Worker threads; 0 builds batches on the calling thread.
    pub workers: usize,
    /// Batches that may wait, built, beyond those the workers are building.
    pub prefetch: usize,
    /// Drop the last batch if it is smaller than `batch_size`.
    pub drop_last: bool,
    /// First batch of the epoch to yield (to resume mid-epoch).
    pub start_batch: usize,
    /// Yield at most this many batches.
    pub max_batches: Option<usize>,
}

impl LoaderConfig {
    /// A configuration with the defaults for the other fields.
    pub fn new(input: InputSpec, batch_size: usize, train: bool, seed: u64) -> Self {
        LoaderConfig {
            input,
            batch_size,
            train,
            seed,
            workers: 0,
            prefetch: 2,
            drop_last: false,
            start_batch: 0,
            max_batches: None,
        }
    }

    /// Sets [`LoaderConfig::workers`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets [`LoaderConfig::prefetch`].
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Sets [`LoaderConfig::drop_last`].
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Sets [`LoaderConfig::start_batch`].
    pub fn start_batch(mut self, b: usize) -> Self {
        self.start_batch = b;
        self
    }

    /// Sets [`LoaderConfig::max_batches`].
    pub fn max_batches(mut self, n: Option<usize>) -> Self {
        self.max_batches = n;
        self
    }
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, C, H, W]` f32 images, normalised.
    pub images: Tensor,
    /// `[B]` u32 labels.
    pub labels: Tensor,
    /// The split's sample index of each image.
    pub indices: Vec<usize>,
    /// The batch's number within the epoch (resume with `start_batch = index + 1`).
    pub index: usize,
    /// Undecodable samples left out of this batch (and of empty batches just before it), with
    /// [`Split::skip_bad`].
    pub skipped: usize,
}

/// A batch built by a worker, before it becomes tensors.
struct Built {
    data: Vec<f32>,
    labels: Vec<u32>,
    indices: Vec<usize>,
    skipped: usize,
}

/// What every worker shares.
struct Job {
    split: Arc<Split>,
    transform: Transform,
    order: Vec<usize>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
}

impl Job {
    fn build(&self, b: usize) -> Result<Built> {
        let lo = b * self.batch_size;
        let hi = (lo + self.batch_size).min(self.order.len());
        let per = self.transform.output_len();
        let mut out = Built {
            data: vec![0f32; (hi - lo) * per],
            labels: Vec::with_capacity(hi - lo),
            indices: Vec::with_capacity(hi - lo),
            skipped: 0,
        };
        let mut k = 0;
        for &i in &self.order[lo..hi] {
            let img = match self.split.decode(i, self.transform.input.channels) {
                Ok(img) => img,
                Err(e) if self.split.skip_bad() => {
                    let _ = e;
                    self.split.mark_bad(i);
                    out.skipped += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut rng = Rng::derive(self.seed, &[AUGMENT, self.epoch, i as u64]);
            self.transform.apply(img, &mut rng, &mut out.data[k * per..(k + 1) * per])?;
            out.labels.push(self.split.label(i));
            out.indices.push(i);
            k += 1;
        }
        out.data.truncate(k * per);
        Ok(out)
    }

    /// [`Job::build`] with a panic turned into an error.
    fn build_caught(&self, b: usize) -> Result<Built> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build(b))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Data(format!("data loader worker panicked building batch {b}: {msg}")))
        })
    }
}

/// Builds the batches of one epoch; see [`Loader::epoch`].
#[derive(Debug, Clone, Copy)]
pub struct Loader;

impl Loader {
    /// Batches in a whole epoch of `len` samples.
    pub fn num_batches(len: usize, batch_size: usize, drop_last: bool) -> usize {
        if batch_size == 0 {
            0
        } else if drop_last {
            len / batch_size
        } else {
            len.div_ceil(batch_size)
        }
    }

    /// Batches [`Loader::epoch`] yields for `len` samples under `cfg` (after `start_batch` and
    /// `max_batches`, before any empty batch is skipped).
    pub fn batches_to_yield(len: usize, cfg: &LoaderConfig) -> usize {
        let n = Self::num_batches(len, cfg.batch_size, cfg.drop_last).saturating_sub(cfg.start_batch);
        cfg.max_batches.map_or(n, |m| n.min(m))
    }

    /// The sample order of `epoch`: shuffled by `(seed, epoch)` for train, `0..len` for val.
    pub fn order(len: usize, cfg: &LoaderConfig, epoch: u64) -> Vec<usize> {
        if cfg.train {
            Rng::derive(cfg.seed, &[SHUFFLE, epoch]).permutation(len)
        } else {
            (0..len).collect()
        }
    }

    /// The batches of `epoch` of `split`, as tensors on `device`. Errors at once for a zero
    /// batch size or an input spec the transforms cannot serve; decode errors come out of the
    /// iterator, in order, after which it ends.
    pub fn epoch(split: Arc<Split>, cfg: &LoaderConfig, epoch: u64, device: &Device) -> Result<EpochIter> {
        if cfg.batch_size == 0 {
            return Err(Error::Data("batch size must be positive".into()));
        }
        let transform = Transform::new(&cfg.input, cfg.train)?;
        let order = Self::order(split.len(), cfg, epoch);
        let start = cfg.start_batch;
        let end = start + Self::batches_to_yield(split.len(), cfg);
        let job = Arc::new(Job { split, transform, order, batch_size: cfg.batch_size, seed: cfg.seed, epoch });
        let shape = (cfg.input.channels, cfg.input.size);
        let workers = cfg.workers.min(end - start);
        let mode = if workers == 0 {
            Mode::Inline(job)
        } else {
            let slots = workers + cfg.prefetch;
            let (tok_tx, tok_rx) = sync_channel::<()>(slots);
            for _ in 0..slots {
                let _ = tok_tx.send(());
            }
            let tok_rx = Arc::new(Mutex::new(tok_rx));
            let (res_tx, res_rx) = sync_channel::<(usize, Result<Built>)>(slots);
            let next = Arc::new(AtomicUsize::new(start));
            let stop = Arc::new(AtomicBool::new(false));
            let mut handles = Vec::with_capacity(workers);
            for w in 0..workers {
                let (job, tok_rx, res_tx, next, stop) =
                    (job.clone(), tok_rx.clone(), res_tx.clone(), next.clone(), stop.clone());
                let h = std::thread::Builder::new()
                    .name(format!("edmips-data-{w}"))
                    .spawn(move || worker(job, tok_rx, res_tx, next, stop, end))
                    .map_err(|e| Error::Data(format!("cannot start data loader thread: {e}")))?;
                handles.push(h);
            }
            Mode::Threads { rx: res_rx, tokens: tok_tx, pending: BTreeMap::new(), handles, stop }
        };
        Ok(EpochIter { device: device.clone(), shape, next: start, end, carried: 0, mode })
    }
}

fn worker(
    job: Arc<Job>,
    tokens: Arc<Mutex<Receiver<()>>>,
    results: SyncSender<(usize, Result<Built>)>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    end: usize,
) {
    loop {
        let got = match tokens.lock() {
            Ok(rx) => rx.recv().is_ok(),
            Err(_) => false,
        };
        if !got || stop.load(Ordering::Relaxed) {
            return;
        }
        let b = next.fetch_add(1, Ordering::Relaxed);
        if b >= end {
            return;
        }
        let r = job.build_caught(b);
        if results.send((b, r)).is_err() {
            return;
        }
    }
}

enum Mode {
    Inline(Arc<Job>),
    Threads {
        rx: Receiver<(usize, Result<Built>)>,
        tokens: SyncSender<()>,
        pending: BTreeMap<usize, Result<Built>>,
        handles: Vec<JoinHandle<()>>,
        stop: Arc<AtomicBool>,
    },
    Done,
}

/// The iterator of [`Loader::epoch`]: `Result<Batch>` in batch order. Dropping it early stops
/// and joins the workers.
pub struct EpochIter {
    device: Device,
    shape: (usize, usize),
    next: usize,
    end: usize,
    carried: usize,
    mode: Mode,
}

impl std::fmt::Debug for EpochIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochIter").field("next", &self.next).field("end", &self.end).finish_non_exhaustive()
    }
}

impl EpochIter {
    /// Undecodable samples skipped since the last yielded batch: at the end of an epoch, those
    /// of trailing batches that had no usable sample (they are not yielded, so no
    /// [`Batch::skipped`] counts them).
    pub fn trailing_skipped(&self) -> usize {
        self.carried
    }

    /// Batch numbers still to come (empty batches, skipped, included).
    pub fn remaining(&self) -> usize {
        self.end - self.next
    }

    fn next_built(&mut self) -> Result<Built> {
        let b = self.next;
        match &mut self.mode {
            Mode::Inline(job) => job.build_caught(b),
            Mode::Threads { rx, tokens, pending, .. } => loop {
                if let Some(r) = pending.remove(&b) {
                    let _ = tokens.send(());
                    return r;
                }
                match rx.recv() {
                    Ok((i, r)) => {
                        pending.insert(i, r);
                    }
                    Err(_) => {
                        return Err(Error::Data(format!("data loader workers stopped before batch {b} was built")))
                    }
                }
            },
            Mode::Done => Err(Error::Data("data loader already finished".into())),
        }
    }

    fn to_batch(&self, built: Built, index: usize, skipped: usize) -> Result<Batch> {
        let (c, s) = self.shape;
        let n = built.labels.len();
        let images = Tensor::from_vec(built.data, (n, c, s, s), &self.device)?;
        let labels = Tensor::from_vec(built.labels, n, &self.device)?;
        Ok(Batch { images, labels, indices: built.indices, index, skipped })
    }

    fn shutdown(&mut self) {
        if let Mode::Threads { rx, tokens, handles, stop, .. } = std::mem::replace(&mut self.mode, Mode::Done) {
            stop.store(true, Ordering::Relaxed);
            drop(tokens);
            drop(rx);
            for h in handles {
                let _ = h.join();
            }
        }
        self.next = self.end;
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        while self.next < self.end {
            let index = self.next;
            let r = self.next_built();
            self.next += 1;
            match r {
                Ok(built) if built.labels.is_empty() => self.carried += built.skipped,
                Ok(built) => {
                    let skipped = built.skipped + std::mem::take(&mut self.carried);
                    let out = self.to_batch(built, index, skipped);
                    if out.is_err() {
                        self.shutdown();
                    }
                    return Some(out);
                }
                Err(e) => {
                    self.shutdown();
                    return Some(Err(e));
                }
            }
        }
        self.shutdown();
        None
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Arc<Split> {
        let pixels: Vec<u8> = (0..n * 16).map(|i| (i % 251) as u8).collect();
        Arc::new(Split::from_raw("toy", 4, 4, 1, pixels, (0..n as u32).map(|i| i % 3).collect()).unwrap())
    }

    fn spec() -> InputSpec {
        InputSpec { channels: 1, mean: vec![0.5], std: vec![0.25], ..InputSpec::cifar(4) }
    }

    fn collect(split: &Arc<Split>, cfg: &LoaderConfig, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>, Vec<u32>)> {
        Loader::epoch(split.clone(), cfg, epoch, &Device::Cpu)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (b.indices, b.images.flatten_all().unwrap().to_vec1().unwrap(), b.labels.to_vec1().unwrap())
            })
            .collect()
    }

    #[test]
    fn counts_partial_batches_and_caps() {
        assert_eq!(Loader::num_batches(10, 4, false), 3);
        assert_eq!(Loader::num_batches(10, 4, true), 2);
        let cfg = LoaderConfig::new(spec(), 4, false, 0);
        let b = collect(&toy(10), &cfg, 0);
        assert_eq!(b.iter().map(|x| x.0.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(b[2].0, vec![8, 9]);
        assert_eq!(b[2].2, vec![2, 0]);
        let b = collect(&toy(10), &cfg.clone().drop_last(true), 0);
        assert_eq!(b.len(), 2);
        let b = collect(&toy(10), &cfg.clone().start_batch(1).max_batches(Some(1)), 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, vec![4, 5, 6, 7]);
        assert!(collect(&toy(10), &cfg.clone().start_batch(5), 0).is_empty());
    }

    #[test]
    fn val_is_sequential_and_normalised() {
        let cfg = LoaderConfig::new(spec(), 3, false, 0);
        let split = toy(3);
        let b = collect(&split, &cfg, 0);
        let img = split.decode(1, 1).unwrap();
        let want: Vec<f32> = img.data.iter().map(|&v| (v as f32 / 255.0 - 0.5) / 0.25).collect();
        assert_eq!(&b[0].1[16..32], &want[..]);
    }

    #[test]
    fn train_order_is_a_seeded_permutation_and_resume_is_exact() {
        let split = toy(50);
        let cfg = LoaderConfig::new(spec(), 8, true, 7);
        let full = collect(&split, &cfg, 3);
        let mut all: Vec<usize> = full.iter().flat_map(|b| b.0.clone()).collect();
        assert_ne!(all, (0..50).collect::<Vec<_>>());
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert_ne!(collect(&split, &cfg, 4)[0].0, full[0].0, "epochs differ");
        let resumed = collect(&split, &cfg.clone().start_batch(4).workers(2), 3);
        assert_eq!(&full[4..], &resumed[..]);
    }

    #[test]
    fn worker_count_does_not_change_batches() {
        let split = toy(70);
        let cfg = LoaderConfig::new(spec(), 8, true, 11);
        let a = collect(&split, &cfg, 1);
        for w in [1, 2, 3, 5] {
            assert_eq!(a, collect(&split, &cfg.clone().workers(w).prefetch(w % 2), 1), "workers {w}");
        }
    }

    #[test]
    fn dropping_early_stops_workers() {
        let split = toy(500);
        let cfg = LoaderConfig::new(spec(), 2, true, 1).workers(3);
        let mut it = Loader::epoch(split, &cfg, 0, &Device::Cpu).unwrap();
        assert!(it.next().unwrap().is_ok());
        drop(it);
    }

    #[test]
    fn zero_batch_size_is_an_error() {
        let e = Loader::epoch(toy(3), &LoaderConfig::new(spec(), 0, true, 1), 0, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("batch size"));
    }
}
