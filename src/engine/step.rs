//! The training step, written once: forward, loss (cross-entropy plus `cd ·` complexity in a
//! search), backward and both optimiser updates. The trainer, the step bench and the golden
//! step tests all call [`train_step`], so the tests check the engine itself.
//!
//! * [`Optimizers`]: the SGD groups of a run (weights with `lr`; the architecture logits
//!   with `lra`, search only; learnable quantizer parameters with `quant_lr`, when the
//!   quantizers have any), built from a network's parameter groups by [`Optimizers::new`].
//! * [`step_loss`]: forward and loss, no update (what validation-style checks and the last
//!   golden step need).
//! * [`apply_update`]: backward, a finiteness check of the loss (a non-finite loss is an
//!   [`Error::NonFinite`] and nothing is updated), and the updates.
//! * [`train_step`]: the two in a row.
//!
//! **One host read per step.** Nothing in the forward or backward pass reads a device value
//! on the host (no `.item()` per layer, as the reference has: σ, the quantizers' branch
//! parameters and the complexity stay on the device, and their constants are cached per device,
//! [`edmips_core::ops::consts`]). The step reads the device once: cross-entropy, total loss,
//! complexity and the top-1/top-5 hit counts, as one small tensor, after the backward pass has
//! been queued and before the updates. The read is what the finiteness check needs; placing it
//! after the backward lets a GPU run forward and backward back to back.

use candle_core::{DType, Tensor, Var};

use edmips_core::graph::{Forward, Network};
use edmips_core::param_store::ParamGroup;
use edmips_core::{ComplexityCost, Error, RelaxContext, Result};

use super::metrics::topk_hits_tensor;
use super::optim::Sgd;

/// Learning rate, momentum and weight decay of one SGD group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

/// The named variables of one parameter group of `net`, in declaration order.
pub fn param_group(net: &Network, group: ParamGroup) -> Vec<(String, Var)> {
    net.params().group(group).into_iter().map(|p| (p.name.clone(), p.var.clone())).collect()
}

/// The optimisers of a run: weights always, architecture logits in a search, and the
/// learnable quantizer parameters when the quantizers have any.
#[derive(Debug)]
pub struct Optimizers {
    /// Network weights (conv, batch norm affine, classifier).
    pub weights: Sgd,
    /// Architecture logits (the `lra` group); `None` in a retrain.
    pub logits: Option<Sgd>,
    /// Learnable quantizer parameters (the `quant` group: LSQ steps, PACT clips); `None` when
    /// the network has none.
    pub quant: Option<Sgd>,
}

impl Optimizers {
    /// SGD over `net`'s weights with `weights`, over its architecture logits with `logits`
    /// when given (a search), and over its learnable quantizer parameters with `weights`'
    /// settings.
    pub fn new(net: &Network, weights: SgdParams, logits: Option<SgdParams>) -> Self {
        Self::with_quant(net, weights, logits, weights)
    }

    /// As [`new`](Self::new), with the quantizer parameters' own settings `quant`.
    pub fn with_quant(net: &Network, weights: SgdParams, logits: Option<SgdParams>, quant: SgdParams) -> Self {
        let sgd = |g: ParamGroup, p: SgdParams| Sgd::new(param_group(net, g), p.lr, p.momentum, p.weight_decay);
        let has_quant = !net.params().group(ParamGroup::Quant).is_empty();
        Optimizers {
            weights: sgd(ParamGroup::Weight, weights),
            logits: logits.map(|a| sgd(ParamGroup::Arch, a)),
            quant: has_quant.then(|| sgd(ParamGroup::Quant, quant)),
        }
    }

    /// The optimisers with their checkpoint names: `weight`, `arch` (a search) and `quant`
    /// (learnable quantizers).
    pub fn named(&self) -> Vec<(&'static str, &Sgd)> {
        let mut v = vec![("weight", &self.weights)];
        v.extend(self.logits.as_ref().map(|a| ("arch", a)));
        v.extend(self.quant.as_ref().map(|q| ("quant", q)));
        v
    }

    /// The optimiser called `name` (see [`named`](Self::named)), if the run has it.
    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut Sgd> {
        match name {
            "weight" => Some(&mut self.weights),
            "arch" => self.logits.as_mut(),
            "quant" => self.quant.as_mut(),
            _ => None,
        }
    }

    /// The logits' learning rate (0 without architecture logits).
    pub fn logits_lr(&self) -> f64 {
        self.logits.as_ref().map(|a| a.lr).unwrap_or(0.0)
    }
}

/// The differentiable complexity of a forward pass ([`ComplexityCost::complexity`] over its
/// relaxed bit distributions); `None` outside search mode.
pub fn complexity(net: &Network, cost: &dyn ComplexityCost, fwd: &Forward) -> Result<Option<Tensor>> {
    if fwd.dists.is_empty() {
        return Ok(None);
    }
    Ok(Some(cost.complexity(net.searchable_layers(), &fwd.dists)?))
}

/// Mean cross-entropy of `logits` `[N, K]` against `labels` `[N]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// A forward pass and its loss terms (tensors, still on the device).
#[derive(Debug)]
pub struct StepLoss {
    /// The forward pass.
    pub fwd: Forward,
    /// Mean cross-entropy.
    pub ce: Tensor,
    /// The complexity term before `cd` (search mode only).
    pub complexity: Option<Tensor>,
    /// `ce + cd · complexity` (just `ce` when there is no complexity or `cd` is 0).
    pub loss: Tensor,
    /// `[top-1 hits, top-5 hits]` of the logits against the labels (f32 counts, on the device).
    pub hits: Tensor,
}

/// Forward `x` in training mode and form the loss against `labels`.
pub fn step_loss(
    net: &Network,
    cost: &dyn ComplexityCost,
    x: &Tensor,
    labels: &Tensor,
    ctx: &RelaxContext,
    cd: f64,
) -> Result<StepLoss> {
    let fwd = net.forward(x, true, ctx)?;
    let ce = cross_entropy(&fwd.logits, labels)?;
    let complexity = complexity(net, cost, &fwd)?;
    let loss = match &complexity {
        Some(c) if cd != 0.0 => ce.add(&c.affine(cd, 0.0)?)?,
        _ => ce.clone(),
    };
    let hits = topk_hits_tensor(&fwd.logits, labels)?;
    Ok(StepLoss { fwd, ce, complexity, loss, hits })
}

/// What one [`train_step`] measured (values before the update).
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The logits of the forward pass (before the update).
    pub logits: Tensor,
    /// Mean cross-entropy.
    pub ce: f64,
    /// The complexity term before `cd` (0 outside search mode).
    pub complexity: f64,
    /// The total loss.
    pub loss: f64,
    /// Top-1 hits of the logits in the batch (a count).
    pub top1_hits: usize,
    /// Top-5 hits of the logits in the batch (a count).
    pub top5_hits: usize,
}

/// The step's one host read: `[ce, loss, complexity (0 without), top-1 hits, top-5 hits]`,
/// each exactly as f64 (f32 values widen exactly).
fn read_step_values(s: &StepLoss) -> Result<[f64; 5]> {
    let f = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to_dtype(DType::F64)?.flatten_all()?) };
    let complexity = match &s.complexity {
        Some(c) => f(c)?,
        None => Tensor::zeros(1, DType::F64, s.loss.device())?,
    };
    let all = Tensor::cat(&[f(&s.ce)?, f(&s.loss)?, complexity, f(&s.hits)?], 0)?;
    let v = all.to_vec1::<f64>()?;
    match v.as_slice() {
        [ce, loss, c, h1, h5] => Ok([*ce, *loss, *c, *h1, *h5]),
        _ => Err(Error::msg(format!("step values: expected 5 numbers, got {}", v.len()))),
    }
}

/// The second half of a step: backward, the step's one host read, a finiteness check of the
/// loss (a non-finite loss updates nothing and is an [`Error::NonFinite`] naming both loss
/// terms), and the updates of `optim` (the logits' optimiser too when it exists).
pub fn apply_update(s: StepLoss, optim: &mut Optimizers) -> Result<StepOutcome> {
    // Queue the backward before reading, so a GPU runs forward and backward back to back; a
    // non-finite loss then has computed gradients that are simply dropped.
    let grads = s.loss.backward()?;
    let [ce, loss, complexity, h1, h5] = read_step_values(&s)?;
    if !ce.is_finite() || !loss.is_finite() {
        return Err(Error::NonFinite(format!("loss (cross-entropy {ce}, total {loss})")));
    }
    optim.weights.step(&grads)?;
    if let Some(a) = optim.logits.as_mut() {
        a.step(&grads)?;
    }
    if let Some(q) = optim.quant.as_mut() {
        q.step(&grads)?;
    }
    drop(grads);
    Ok(StepOutcome { logits: s.fwd.logits, ce, complexity, loss, top1_hits: h1 as usize, top5_hits: h5 as usize })
}

/// One training step: [`step_loss`] then [`apply_update`].
pub fn train_step(
    net: &Network,
    cost: &dyn ComplexityCost,
    optim: &mut Optimizers,
    x: &Tensor,
    labels: &Tensor,
    ctx: &RelaxContext,
    cd: f64,
) -> Result<StepOutcome> {
    apply_update(step_loss(net, cost, x, labels, ctx, cd)?, optim)
}
