//! `edmips bench step`: the time of one training step (search for mix configurations, retrain
//! for quant ones) on random input of the configuration's size. This is the figure to put side
//! by side with the PyTorch reference.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::optim::Sgd;
use super::run_config::RunConfig;
use super::trainer::complexity;
use crate::error::Result;
use crate::graph::build_network;
use crate::graph::LayerMode;
use crate::params::ParamGroup;
use crate::traits::RelaxContext;

/// Timings of `iters` training steps after `warmup` untimed ones.
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    /// Configuration name.
    pub arch: String,
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

/// One training step of a configuration on fixed random input, repeatable: what
/// [`bench_step`] and the criterion step bench time.
pub struct StepRunner {
    net: crate::graph::Network,
    cost: Box<dyn crate::traits::ComplexityCost>,
    weights: Sgd,
    arch: Sgd,
    x: Tensor,
    y: Tensor,
    cd: f64,
    search: bool,
}

impl StepRunner {
    /// Builds the network of `cfg` with random input of `batch` images. Fixed-bit
    /// configurations that need an architecture file run at uniform w2a2.
    pub fn new(cfg: &RunConfig, batch: usize, device: &Device) -> Result<Self> {
        let graph = crate::graph::declare_graph(&cfg.model)?;
        let needs_arch = matches!(cfg.model.mode, crate::QuantMode::Fixed { bits: crate::FixedBits::ArchFile });
        let uniform = vec![(2u32, 2u32); graph.layers().len()];
        let net = build_network(&cfg.model, needs_arch.then_some(uniform.as_slice()), device, cfg.train.seed)?;
        let cost = crate::registry::build_cost(&cfg.model.cost)?;
        let search = matches!(net.mode(), LayerMode::Search { .. });
        let group =
            |g: ParamGroup| net.params().group(g).into_iter().map(|p| (p.name.clone(), p.var.clone())).collect();
        let t = &cfg.train;
        let weights = Sgd::new(group(ParamGroup::Weight), t.lr, t.momentum, t.weight_decay);
        let arch = Sgd::new(group(ParamGroup::Arch), t.lra, t.momentum, t.weight_decay);
        let input = &graph.input;
        let x = Tensor::randn(0f32, 1.0, (batch, input.channels, input.size, input.size), device)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % cfg.model.num_classes as u32).collect();
        let y = Tensor::from_vec(labels, batch, device)?;
        let cd = if t.complexity_decay != 0.0 { t.complexity_decay } else { 1e-3 };
        Ok(StepRunner { net, cost, weights, arch, x, y, cd, search })
    }

    /// Whether this is a search step (both optimisers, complexity term).
    pub fn is_search(&self) -> bool {
        self.search
    }

    /// One forward, backward and update; returns the loss (reading it waits for the device).
    pub fn step(&mut self) -> Result<f32> {
        let ctx = RelaxContext { training: true, ..Default::default() };
        let fwd = self.net.forward(&self.x, true, &ctx)?;
        let mut loss = candle_nn::loss::cross_entropy(&fwd.logits, &self.y)?;
        if let Some(c) = complexity(&self.net, self.cost.as_ref(), &fwd)? {
            loss = loss.add(&c.affine(self.cd, 0.0)?)?;
        }
        let grads = loss.backward()?;
        self.weights.step(&grads)?;
        if self.search {
            self.arch.step(&grads)?;
        }
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
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
        arch: cfg.arch.clone(),
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
