//! `edmips bench step`: the time of one training step (search for mix configurations, retrain
//! for quant ones) on random input of the configuration's size. This is the figure to put side
//! by side with the PyTorch reference. The step is the engine's own [`train_step`].

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::run_config::RunConfig;
use super::step::{train_step, Optimizers};
use edmips_core::error::Result;
use edmips_core::graph::{build_network, declare_graph, LayerMode, Network};
use edmips_core::traits::{ComplexityCost, RelaxContext};
use edmips_core::{FixedBits, QuantMode};

/// Timings of `iters` training steps after `warmup` untimed ones.
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    /// Configuration name.
    pub config: String,
    /// `"search"` or `"train"`.
    pub kind: String,
    /// Device description.
    pub device: String,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub iters: usize,
    /// Median step time (ms).
    pub median_ms: f64,
    /// Fastest step (ms).
    pub min_ms: f64,
    /// Slowest step (ms).
    pub max_ms: f64,
    /// `batch / median`.
    pub images_per_s: f64,
}

/// The complexity weight a bench step uses when the configuration has none, so a search step
/// always times the complexity term and its gradient.
pub const BENCH_CD: f64 = 1e-3;

/// One training step of a configuration on fixed random input, repeatable: what
/// [`bench_step`] and the criterion step bench time.
pub struct StepRunner {
    net: Network,
    cost: Box<dyn ComplexityCost>,
    optim: Optimizers,
    x: Tensor,
    y: Tensor,
    cd: f64,
}

impl StepRunner {
    /// Builds the network of `cfg` with random input of `batch` images. Fixed-bit
    /// configurations that need an architecture file run at uniform w2a2.
    pub fn new(cfg: &RunConfig, batch: usize, device: &Device) -> Result<Self> {
        let graph = declare_graph(&cfg.model)?;
        let needs_arch = matches!(cfg.model.mode, QuantMode::Fixed { bits: FixedBits::ArchFile });
        let uniform = vec![(2u32, 2u32); graph.searchable_layers().len()];
        let net = build_network(&cfg.model, needs_arch.then_some(uniform.as_slice()), device, cfg.train.seed)?;
        let cost = edmips_core::graph::build_cost(&cfg.model, net.graph(), net.mode())?;
        let search = matches!(net.mode(), LayerMode::Search { .. });
        let (weights, logits, quant) = cfg.train.sgd_params();
        let optim = Optimizers::with_quant(&net, weights, search.then_some(logits), quant);
        let input = &graph.input;
        let x = Tensor::randn(0f32, 1.0, (batch, input.channels, input.size, input.size), device)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % cfg.model.num_classes as u32).collect();
        let y = Tensor::from_vec(labels, batch, device)?;
        let t = &cfg.train;
        let cd = if t.complexity_decay != 0.0 { t.complexity_decay } else { BENCH_CD };
        Ok(StepRunner { net, cost, optim, x, y, cd })
    }

    /// Whether this is a search step (both optimisers, complexity term).
    pub fn is_search(&self) -> bool {
        self.optim.logits.is_some()
    }

    /// One forward, backward and update; returns the loss (reading it waits for the device).
    pub fn step(&mut self) -> Result<f64> {
        let ctx = RelaxContext::train(0, 0, 0);
        Ok(train_step(&self.net, self.cost.as_ref(), &mut self.optim, &self.x, &self.y, &ctx, self.cd)?.loss)
    }
}

/// Times `iters` training steps of `cfg` after `warmup` untimed ones.
pub fn bench_step(cfg: &RunConfig, batch: usize, iters: usize, warmup: usize, device: &Device) -> Result<StepBench> {
    let mut runner = StepRunner::new(cfg, batch, device)?;
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let start = Instant::now();
        runner.step()?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = if times.is_empty() { 0.0 } else { times[times.len() / 2] };
    Ok(StepBench {
        config: cfg.config_name.clone(),
        kind: if runner.is_search() { "search" } else { "train" }.into(),
        device: format!("{device:?}"),
        batch,
        iters,
        median_ms: median,
        min_ms: times.first().copied().unwrap_or(0.0),
        max_ms: times.last().copied().unwrap_or(0.0),
        images_per_s: if median > 0.0 { batch as f64 / (median / 1e3) } else { 0.0 },
    })
}
