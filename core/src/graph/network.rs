//! The network executor: a declared [`Graph`] turned into parameters and a runnable forward
//! pass for search (mixed convolutions), retraining (fixed bits) or full precision.
//!
//! * **Parameters** ([`ParamStore`], state-dict keys) are created in node declaration order:
//!   * full-precision conv: `<name>.weight`;
//!   * quantizable conv: in search mode `<name>.alpha_activ` and `<name>.alpha_weight` (group
//!     [`Arch`](ParamGroup::Arch), initialised with [`Relaxation::init_logits`]) then
//!     `<name>.weight` (the reference's registration order); otherwise `<name>.weight` only;
//!     then the learnable parameters of a learnable activation quantizer and weight quantizer,
//!     per candidate bit width (`<name>.act_quant.step.b2`, group [`Quant`](ParamGroup::Quant),
//!     [`LearnedState`]); parameter-free quantizers add nothing;
//!   * batch norm: `<name>.weight` = 1 and `<name>.bias` = 0 (when affine, group
//!     [`Weight`](ParamGroup::Weight)), `<name>.running_mean` = 0 and `<name>.running_var` = 1
//!     (group [`Buffer`](ParamGroup::Buffer));
//!   * linear: `<name>.weight` `[out, in]` and `<name>.bias`.
//! * **Initialisation** (D18) draws from one [`Rng`] seeded with the network seed, in
//!   declaration order: convolutions by their [`InitScheme`] (He fan-out or truncated normal);
//!   linear weights by PyTorch's default `U(±1/sqrt(in))` (or the truncated normal when that is
//!   the scheme) and linear biases always by PyTorch's default.
//! * **Modes** ([`LayerMode`]): search builds every quantizable conv as a [`MixedConv`], fixed
//!   mode as a [`FixedConv`] at its (wbit, abit), full precision as a [`FixedConv`] at (32, 32)
//!   (the activation quantizer's full-precision form, HWGQ's ReLU, then an unquantized weight).
//! * **Forward** runs the nodes in order and drops each intermediate tensor once its last
//!   consumer has run. In train mode batch norm uses batch statistics and updates its running
//!   statistics in place.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use super::builder::{BnOpts, Graph, InitScheme, NodeOp};
use crate::bits::{check_candidates, check_layer_bits, FULL_PRECISION_BITS};
use crate::error::{Error, Result};
use crate::init::{he_fan_out, linear_default, trunc_normal, Rng};
use crate::layer_info::LayerInfo;
use crate::layers::{Conv, FixedConv, LearnedState, MixedConv};
use crate::ops::avg_pool::avg_pool2d;
use crate::ops::batch_norm::{batch_norm_eval, batch_norm_train, BatchNormParams};
use crate::ops::bn_add::batch_norm_add;
use crate::ops::max_pool::max_pool2d;
use crate::param_store::{ParamGroup, ParamStore};
use crate::traits::{BitDistribution, Operand, Quantizer, RelaxContext, Relaxation};

/// One layer's learnable quantizer parameters: full name and host values, in declaration order.
pub type LearnedValues = Vec<(String, Vec<f32>)>;

/// How the quantizable convolutions of a network are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerMode {
    /// Mixed-precision search over these candidates (every layer the same).
    Search {
        /// Weight-bit candidates.
        wbits: Vec<u32>,
        /// Activation-bit candidates.
        abits: Vec<u32>,
    },
    /// Fixed `(wbit, abit)` per searchable layer, in declaration order.
    Fixed(Vec<(u32, u32)>),
    /// No quantization: `(32, 32)` everywhere.
    FullPrecision,
}

/// The plugins and mode a [`Network`] is built with.
#[derive(Debug, Clone)]
pub struct NetworkSetup {
    /// Search, fixed or full precision.
    pub mode: LayerMode,
    /// The activation quantizer.
    pub act_quantizer: Arc<dyn Quantizer>,
    /// The weight quantizer.
    pub weight_quantizer: Arc<dyn Quantizer>,
    /// The search relaxation (used in search mode).
    pub relaxation: Arc<dyn Relaxation>,
}

/// The result of [`Network::forward`].
#[derive(Debug, Clone)]
pub struct Forward {
    /// `[N, num_classes]`.
    pub logits: Tensor,
    /// `(activation, weight)` bit distributions per searchable layer, in order; empty unless
    /// the network is in search mode.
    pub dists: Vec<(BitDistribution, BitDistribution)>,
    /// The output of each searchable convolution, in order.
    pub layer_outputs: Vec<Tensor>,
}

/// Per-node runtime state.
#[derive(Debug, Clone)]
enum Runtime {
    Stateless,
    Conv(Conv),
    Mixed(Box<MixedConv>),
    Fixed(Box<FixedConv>),
    BatchNorm {
        name: String,
        weight: Option<Var>,
        bias: Option<Var>,
        running_mean: Var,
        running_var: Var,
        opts: BnOpts,
    },
    Linear {
        weight: Var,
        bias: Var,
    },
}

/// A runnable network: graph, parameters and per-node state (parameter names, initialisation,
/// modes and forward semantics are described in the [`graph`](crate::graph) module docs).
#[derive(Debug, Clone)]
pub struct Network {
    graph: Graph,
    params: ParamStore,
    mode: LayerMode,
    runtime: Vec<Runtime>,
    /// Node index of each searchable layer.
    layer_nodes: Vec<usize>,
    /// Number of consumers of each node (the output counts one extra).
    uses: Vec<usize>,
    /// Per node: which op after it a batch norm may be fused into in train mode.
    bn_fusion: Vec<BnFusion>,
    /// Whether train mode tries that fusion ([`Network::set_fused_batch_norm`]).
    fuse_batch_norm: bool,
    relaxation: Arc<dyn Relaxation>,
}

/// Where a batch-norm node's output goes, when it may run fused with that consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BnFusion {
    /// Not a batch norm, or its output has other or several consumers.
    None,
    /// It feeds one quantized conv and nothing else: the conv's activation quantizer may fuse
    /// it ([`Quantizer::mix_batch_norm`]).
    IntoQuant,
    /// It is the first operand of one addition and nothing else: the two run as one op
    /// ([`batch_norm_add`]).
    IntoAdd,
}

fn layer_err(l: &LayerInfo, e: impl std::fmt::Display) -> Error {
    Error::msg(format!("layer {} `{}`: {e}", l.index, l.name))
}

/// Checks `mode` against the quantizers for every layer ([`crate::bits`]); errors name the
/// layer.
fn validate_mode(mode: &LayerMode, layers: &[LayerInfo], act: &dyn Quantizer, weight: &dyn Quantizer) -> Result<()> {
    match mode {
        // The candidates are the same for every layer: a bad one is reported at the first.
        LayerMode::Search { wbits, abits } => {
            check_candidates(wbits, abits, act, weight).map_err(|e| match layers.first() {
                Some(l) if !wbits.is_empty() && !abits.is_empty() => layer_err(l, e),
                _ => e,
            })
        }
        LayerMode::Fixed(bits) => {
            if bits.len() != layers.len() {
                return Err(Error::msg(format!(
                    "fixed bits: expected {} (wbit, abit) pairs, one per searchable layer of this network, found {}",
                    layers.len(),
                    bits.len()
                )));
            }
            for (l, &(w, a)) in layers.iter().zip(bits) {
                check_layer_bits(w, a, act, weight).map_err(|e| layer_err(l, e))?;
            }
            Ok(())
        }
        LayerMode::FullPrecision => act
            .check(Operand::Activation, FULL_PRECISION_BITS)
            .map_err(|e| Error::msg(format!("full precision needs the activation quantizer's 32-bit form: {e}"))),
    }
}

fn conv_init(rng: &mut Rng, init: InitScheme, out: usize, kh: usize, kw: usize, n: usize) -> Vec<f32> {
    match init {
        InitScheme::HeFanOut => he_fan_out(rng, out, kh, kw, n),
        InitScheme::TruncNormal { std } => trunc_normal(rng, std, n),
    }
}

impl Network {
    /// Creates every parameter (seeded initialisation, D18) and validates the bits
    /// against the quantizers; an unsupported bit width is an error naming the layer.
    pub fn new(graph: Graph, setup: NetworkSetup, device: &Device, seed: u64) -> Result<Self> {
        let NetworkSetup { mode, act_quantizer, weight_quantizer, relaxation } = setup;
        validate_mode(&mode, &graph.searchable, act_quantizer.as_ref(), weight_quantizer.as_ref())?;
        let mut rng = Rng::new(seed);
        let mut params = ParamStore::new();
        let mut runtime = Vec::with_capacity(graph.nodes.len());
        let mut layer_nodes = vec![usize::MAX; graph.searchable.len()];
        let mut uses = vec![0usize; graph.nodes.len()];
        for n in &graph.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        uses[graph.output] += 1;

        for (ni, node) in graph.nodes.iter().enumerate() {
            let cin = node.inputs.first().map(|&i| graph.nodes[i].shape.0).unwrap_or(0);
            let rt = match &node.op {
                NodeOp::Input
                | NodeOp::Relu
                | NodeOp::MaxPool(_)
                | NodeOp::AvgPool(_)
                | NodeOp::GlobalAvgPool
                | NodeOp::Add
                | NodeOp::Concat => Runtime::Stateless,
                NodeOp::Conv { name, kernel, stride, pad, init } => {
                    let out = node.shape.0;
                    let n = out * cin * kernel.0 * kernel.1;
                    let w = conv_init(&mut rng, *init, out, kernel.0, kernel.1, n);
                    let w = Tensor::from_vec(w, (out, cin, kernel.0, kernel.1), device)?;
                    let weight = params.add(format!("{name}.weight"), w, ParamGroup::Weight)?;
                    Runtime::Conv(Conv { weight, stride: *stride, padding: pad.0 })
                }
                NodeOp::QuantConv { layer, init } => {
                    let info = graph
                        .searchable
                        .get(*layer)
                        .ok_or_else(|| {
                            Error::msg(format!("node {ni}: quantizable conv refers to missing layer {layer}"))
                        })?
                        .clone();
                    layer_nodes[*layer] = ni;
                    let (out, (kh, kw)) = (info.out_channels, info.kernel);
                    let name = info.name.clone();
                    let alphas = match &mode {
                        LayerMode::Search { wbits, abits } => {
                            let a = Tensor::from_vec(relaxation.init_logits(abits.len()), abits.len(), device)?;
                            let a = params.add(format!("{name}.alpha_activ"), a, ParamGroup::Arch)?;
                            let w = Tensor::from_vec(relaxation.init_logits(wbits.len()), wbits.len(), device)?;
                            let w = params.add(format!("{name}.alpha_weight"), w, ParamGroup::Arch)?;
                            Some((a, w))
                        }
                        _ => None,
                    };
                    let n = out * info.in_channels * kh * kw;
                    let w = conv_init(&mut rng, *init, out, kh, kw, n);
                    let w = Tensor::from_vec(w, (out, info.in_channels, kh, kw), device)?;
                    let weight = params.add(format!("{name}.weight"), w, ParamGroup::Weight)?;
                    // The quantizers' learnable parameters follow the weight (after the
                    // reference's tensors, so their names and order are unchanged).
                    let (wb, ab): (Vec<u32>, Vec<u32>) = match &mode {
                        LayerMode::Search { wbits, abits } => (wbits.clone(), abits.clone()),
                        LayerMode::Fixed(bits) => (vec![bits[*layer].0], vec![bits[*layer].1]),
                        LayerMode::FullPrecision => (vec![FULL_PRECISION_BITS], vec![FULL_PRECISION_BITS]),
                    };
                    let act_learned = LearnedState::declare(
                        &mut params,
                        &name,
                        act_quantizer.as_ref(),
                        Operand::Activation,
                        &ab,
                        device,
                    )?;
                    // A quantizer declares nothing at 32 bits (its full-precision form).
                    let weight_learned = LearnedState::declare(
                        &mut params,
                        &name,
                        weight_quantizer.as_ref(),
                        Operand::Weight,
                        &wb,
                        device,
                    )?;
                    match (&mode, alphas) {
                        (LayerMode::Search { wbits, abits }, Some((alpha_activ, alpha_weight))) => {
                            Runtime::Mixed(Box::new(MixedConv {
                                info: info.clone(),
                                weight,
                                alpha_activ,
                                alpha_weight,
                                abits: abits.clone(),
                                wbits: wbits.clone(),
                                act_quantizer: act_quantizer.clone(),
                                weight_quantizer: weight_quantizer.clone(),
                                relaxation: relaxation.clone(),
                                act_learned,
                                weight_learned,
                            }))
                        }
                        _ => Runtime::Fixed(Box::new(FixedConv {
                            info: info.clone(),
                            weight,
                            wbit: wb[0],
                            abit: ab[0],
                            act_quantizer: act_quantizer.clone(),
                            weight_quantizer: weight_quantizer.clone(),
                            act_learned,
                            weight_learned,
                        })),
                    }
                }
                NodeOp::BatchNorm { name, opts } => {
                    let c = node.shape.0;
                    let (weight, bias) = if opts.affine {
                        let w = params.add(
                            format!("{name}.weight"),
                            Tensor::ones(c, DType::F32, device)?,
                            ParamGroup::Weight,
                        )?;
                        let b = params.add(
                            format!("{name}.bias"),
                            Tensor::zeros(c, DType::F32, device)?,
                            ParamGroup::Weight,
                        )?;
                        (Some(w), Some(b))
                    } else {
                        (None, None)
                    };
                    let rm = params.add(
                        format!("{name}.running_mean"),
                        Tensor::zeros(c, DType::F32, device)?,
                        ParamGroup::Buffer,
                    )?;
                    let rv = params.add(
                        format!("{name}.running_var"),
                        Tensor::ones(c, DType::F32, device)?,
                        ParamGroup::Buffer,
                    )?;
                    Runtime::BatchNorm {
                        name: name.clone(),
                        weight,
                        bias,
                        running_mean: rm,
                        running_var: rv,
                        opts: *opts,
                    }
                }
                NodeOp::Linear { name, in_features, init } => {
                    let out = node.shape.0;
                    let n = out * in_features;
                    let w = match init {
                        InitScheme::HeFanOut => linear_default(&mut rng, *in_features, n),
                        InitScheme::TruncNormal { std } => trunc_normal(&mut rng, *std, n),
                    };
                    let b = linear_default(&mut rng, *in_features, out);
                    let weight = params.add(
                        format!("{name}.weight"),
                        Tensor::from_vec(w, (out, *in_features), device)?,
                        ParamGroup::Weight,
                    )?;
                    let bias =
                        params.add(format!("{name}.bias"), Tensor::from_vec(b, out, device)?, ParamGroup::Weight)?;
                    Runtime::Linear { weight, bias }
                }
            };
            runtime.push(rt);
        }
        if let Some(l) = layer_nodes.iter().position(|&n| n == usize::MAX) {
            return Err(Error::msg(format!("searchable layer {l} has no node in the graph")));
        }
        let mut bn_fusion = vec![BnFusion::None; graph.nodes.len()];
        let only_use_is_bn = |j: usize| matches!(graph.nodes[j].op, NodeOp::BatchNorm { .. }) && uses[j] == 1;
        for node in &graph.nodes {
            match (&node.op, node.inputs.as_slice()) {
                (NodeOp::QuantConv { .. }, &[j]) if only_use_is_bn(j) => bn_fusion[j] = BnFusion::IntoQuant,
                (NodeOp::Add, &[j, k]) if j != k && only_use_is_bn(j) => bn_fusion[j] = BnFusion::IntoAdd,
                _ => {}
            }
        }
        Ok(Network { graph, params, mode, runtime, layer_nodes, uses, bn_fusion, fuse_batch_norm: true, relaxation })
    }

    /// Turns the train-mode fusions of a batch norm with the op after it (the quantized conv's
    /// activation quantizer, or the residual addition) on or off (on by default). The fused and
    /// the composed forms give the same values and gradients (`tests/fused_batch_norm.rs`); this
    /// switch exists to compare them.
    pub fn set_fused_batch_norm(&mut self, on: bool) {
        self.fuse_batch_norm = on;
    }

    /// The number of batch norms whose output feeds one quantized conv and nothing else: the
    /// ones train mode offers to that conv's activation quantizer to fuse.
    pub fn fusable_batch_norms(&self) -> usize {
        self.bn_fusion.iter().filter(|&&f| f == BnFusion::IntoQuant).count()
    }

    /// The number of batch norms whose output is the first operand of one addition and nothing
    /// else: the ones train mode runs together with that addition.
    pub fn batch_norms_into_add(&self) -> usize {
        self.bn_fusion.iter().filter(|&&f| f == BnFusion::IntoAdd).count()
    }

    /// The batch-norm parameters of node `ni` and its name, if it is a batch norm.
    fn bn_params(&self, ni: usize) -> Option<(BatchNormParams<'_>, &str)> {
        match &self.runtime[ni] {
            Runtime::BatchNorm { name, weight, bias, running_mean, running_var, opts } => Some((
                BatchNormParams {
                    weight: weight.as_ref().map(|v| v.as_tensor()),
                    bias: bias.as_ref().map(|v| v.as_tensor()),
                    running_mean,
                    running_var,
                    eps: opts.eps,
                    momentum: opts.momentum,
                },
                name.as_str(),
            )),
            _ => None,
        }
    }

    /// Runs the network on `x` (`[N, C, size, size]`). `train` selects batch statistics (and
    /// updates the running statistics) in batch norm.
    pub fn forward(&self, x: &Tensor, train: bool, ctx: &RelaxContext) -> Result<Forward> {
        let spec = &self.graph.input;
        let d = x.dims();
        if d.len() != 4 || d[1] != spec.channels || d[2] != spec.size || d[3] != spec.size {
            return Err(Error::Shape {
                context: format!("input of backbone `{}`", self.graph.backbone),
                expected: format!(
                    "[N, {c}, {s}, {s}] (this network takes {c}-channel {s}x{s} images)",
                    c = spec.channels,
                    s = spec.size
                ),
                found: format!("{d:?}"),
            });
        }
        let nodes = &self.graph.nodes;
        let mut vals: Vec<Option<Tensor>> = vec![None; nodes.len()];
        let mut remaining = self.uses.clone();
        vals[0] = Some(x.to_dtype(DType::F32)?);
        let search = matches!(self.mode, LayerMode::Search { .. });
        let mut dists = Vec::with_capacity(if search { self.layer_nodes.len() } else { 0 });
        let mut layer_outputs = Vec::with_capacity(self.layer_nodes.len());
        // Batch norms left to the quantized conv after them: their value is their input.
        let mut deferred = vec![false; nodes.len()];

        for (ni, node) in nodes.iter().enumerate().skip(1) {
            let ins: Vec<Tensor> = node
                .inputs
                .iter()
                .map(|&j| vals[j].clone().ok_or_else(|| Error::msg(format!("node {ni}: input node {j} not computed"))))
                .collect::<Result<_>>()?;
            let x0 = &ins[0];
            // The batch norm in front (of a quantized conv, or as an addition's first operand),
            // if it was deferred to this node.
            let bn_in = match node.inputs.first() {
                Some(&j) if deferred[j] => self.bn_params(j),
                _ => None,
            };
            let y = match (&node.op, &self.runtime[ni]) {
                (NodeOp::Conv { .. }, Runtime::Conv(c)) => c.forward(x0)?,
                (NodeOp::BatchNorm { .. }, Runtime::BatchNorm { .. })
                    if train && self.fuse_batch_norm && self.bn_fusion[ni] != BnFusion::None =>
                {
                    deferred[ni] = true;
                    x0.clone()
                }
                (NodeOp::QuantConv { .. }, Runtime::Mixed(m)) => {
                    let fused = match &bn_in {
                        Some((p, name)) => m.forward_after_batch_norm(x0, p, name, ctx)?,
                        None => None,
                    };
                    let o = match (fused, &bn_in) {
                        (Some(o), _) => o,
                        (None, Some((p, name))) => m.forward(&batch_norm_train(x0, p, name)?, ctx)?,
                        (None, None) => m.forward(x0, ctx)?,
                    };
                    dists.push((o.act, o.weight));
                    layer_outputs.push(o.y.clone());
                    o.y
                }
                (NodeOp::QuantConv { .. }, Runtime::Fixed(f)) => {
                    let fused = match &bn_in {
                        Some((p, name)) => f.forward_after_batch_norm(x0, p, name)?,
                        None => None,
                    };
                    let y = match (fused, &bn_in) {
                        (Some(y), _) => y,
                        (None, Some((p, name))) => f.forward(&batch_norm_train(x0, p, name)?)?,
                        (None, None) => f.forward(x0)?,
                    };
                    layer_outputs.push(y.clone());
                    y
                }
                (NodeOp::BatchNorm { .. }, Runtime::BatchNorm { .. }) => {
                    let (p, name) =
                        self.bn_params(ni).ok_or_else(|| Error::msg(format!("node {ni}: no batch norm state")))?;
                    if train {
                        batch_norm_train(x0, &p, name)?
                    } else {
                        batch_norm_eval(x0, &p, name)?
                    }
                }
                (NodeOp::Relu, _) => x0.relu()?,
                (NodeOp::MaxPool(o), _) => max_pool2d(x0, o)?,
                (NodeOp::AvgPool(o), _) => avg_pool2d(x0, o)?,
                (NodeOp::GlobalAvgPool, _) => x0.mean_keepdim((2, 3))?,
                (NodeOp::Add, _) => match &bn_in {
                    Some((p, name)) => match batch_norm_add(x0, p, name, &ins[1])? {
                        Some(y) => y,
                        None => batch_norm_train(x0, p, name)?.add(&ins[1])?,
                    },
                    None => x0.add(&ins[1])?,
                },
                (NodeOp::Concat, _) => Tensor::cat(&ins, 1)?,
                (NodeOp::Linear { .. }, Runtime::Linear { weight, bias }) => {
                    x0.flatten_from(1)?.matmul(&weight.as_tensor().t()?)?.broadcast_add(bias.as_tensor())?
                }
                (op, _) => return Err(Error::msg(format!("node {ni}: no runtime state for {op:?}"))),
            };
            drop(ins);
            for &j in &node.inputs {
                remaining[j] -= 1;
                if remaining[j] == 0 {
                    vals[j] = None;
                }
            }
            vals[ni] = Some(y);
        }
        let out = vals[self.graph.output].take().ok_or_else(|| Error::msg("the output node was not computed"))?;
        let logits = if out.rank() == 2 { out } else { out.flatten_from(1)? };
        Ok(Forward { logits, dists, layer_outputs })
    }

    /// The relaxed `(activation, weight)` bit distributions of every searchable layer at the
    /// current logits, without a forward pass (search mode; empty otherwise).
    pub fn distributions(&self, ctx: &RelaxContext) -> Result<Vec<(BitDistribution, BitDistribution)>> {
        self.mixed_layers().map(|m| Ok((m.act_distribution(ctx)?, m.weight_distribution(ctx)?))).collect()
    }

    fn mixed_layers(&self) -> impl Iterator<Item = &MixedConv> {
        self.layer_nodes.iter().filter_map(|&n| match &self.runtime[n] {
            Runtime::Mixed(m) => Some(m.as_ref()),
            _ => None,
        })
    }

    /// The declared graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The searchable layers, in declaration order.
    pub fn searchable_layers(&self) -> &[LayerInfo] {
        &self.graph.searchable
    }

    /// The quantizers' learnable state `(activation, weight)` of every searchable layer, in
    /// order (empty states for parameter-free quantizers).
    pub fn learned_states(&self) -> Vec<(&LearnedState, &LearnedState)> {
        self.layer_nodes
            .iter()
            .filter_map(|&n| match &self.runtime[n] {
                Runtime::Mixed(m) => Some((&m.act_learned, &m.weight_learned)),
                Runtime::Fixed(f) => Some((&f.act_learned, &f.weight_learned)),
                _ => None,
            })
            .collect()
    }

    /// The learnable quantizer parameters of every searchable layer, in order: full name and
    /// host values (for reports; reads the device).
    pub fn learned_values(&self) -> Result<Vec<LearnedValues>> {
        self.learned_states()
            .into_iter()
            .map(|(a, w)| {
                a.params
                    .iter()
                    .chain(&w.params)
                    .flatten()
                    .map(|(name, v)| Ok((name.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
                    .collect()
            })
            .collect()
    }

    /// Forgets the host caches of the quantizers' `initialized` buffers; call after
    /// overwriting parameters (loading a checkpoint), so data-dependent initialisation follows
    /// the loaded buffers.
    pub fn reset_learned_caches(&self) {
        for (a, w) in self.learned_states() {
            a.reset_cache();
            w.reset_cache();
        }
    }

    /// Every tensor by name, in declaration order.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The mode the quantizable layers were built in.
    pub fn mode(&self) -> &LayerMode {
        &self.mode
    }

    /// The relaxation of the search logits.
    pub fn relaxation(&self) -> &Arc<dyn Relaxation> {
        &self.relaxation
    }

    /// `(wbit, abit)` per searchable layer: the relaxation's pick of the logits (argmax, first
    /// on ties) in search mode, the fixed bits in fixed mode, `(32, 32)` in full precision.
    pub fn chosen_bits(&self) -> Result<Vec<(u32, u32)>> {
        match &self.mode {
            LayerMode::Search { .. } => self.mixed_layers().map(|m| m.chosen_bits()).collect(),
            LayerMode::Fixed(b) => Ok(b.clone()),
            LayerMode::FullPrecision => {
                Ok(vec![(FULL_PRECISION_BITS, FULL_PRECISION_BITS); self.graph.searchable.len()])
            }
        }
    }

    /// `(alpha_activ, alpha_weight)` per searchable layer (search mode; empty otherwise).
    pub fn logits(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        self.mixed_layers().map(|m| m.logits()).collect()
    }
}
