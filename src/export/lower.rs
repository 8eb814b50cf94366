//! The graph lowering: a fixed-bit [`Network`] (eval mode) as an ONNX graph in one
//! [`Format`].
//!
//! Node by node, in the declared (topological) order:
//!
//! | network node | exported as |
//! |---|---|
//! | input | graph input `input`, `[N, C, H, W]` float32: the *normalised* image |
//! | full-precision conv | `Conv` (no bias), weight initializer `<name>.weight` as trained |
//! | quantized conv, layer `l` at `(wbit, abit)` | activation quantizer at `abit` ([`emit_quant`]), then `Conv` on the weight initializer `<name>.weight` holding `Q_wbit(W)`; in QONNX a weight `Quant` node sits between them |
//! | batch norm | `BatchNormalization` with the running statistics (eval mode), never folded |
//! | ReLU, max/avg pool, global avg pool, add, concat | `Relu`, `MaxPool`, `AveragePool`, `GlobalAveragePool`, `Add`, `Concat` |
//! | linear | `Flatten` then `Gemm` (`transB = 1`) with `fc.weight`, `fc.bias` |
//!
//! The last node's output is the graph output `logits` `[N, classes]`. Every other node output
//! has its shape in the graph's `value_info` (QONNX's tools expect them); the batch `N` is
//! free, or fixed when asked (QONNX's executor and FINN need a fixed one).
//!
//! **Batch norm is kept, not folded.** In these networks a batch norm either feeds a quantized
//! conv's activation quantizer (folding it into the previous conv would move the quantizer's
//! thresholds) or follows a quantized conv (folding it in would take the weights off the
//! quantizer's grid, and the `Quant` nodes would no longer describe them). The stem's
//! full-precision conv → BN could be folded, but not exactly in f32, so it is kept too.

use candle_core::DType;

use super::emitter::Emitter;
use super::error::{ExportError, Result};
use super::format::Format;
use super::model::{AttrValue, Dim};
use super::quant_nodes::emit_quant;
use edmips_core::graph::{LayerMode, Network, NodeOp};
use edmips_core::traits::{ComplexityCost, Operand, Quantizer};
use edmips_core::{Precision, QuantExport};

/// What an export reads: the network and the plugins it was built with.
#[derive(Debug, Clone, Copy)]
pub struct ExportInput<'a> {
    /// The fixed-bit (or full-precision) network, with its trained tensors.
    pub net: &'a Network,
    /// The named configuration (for the metadata).
    pub config_name: &'a str,
    /// The activation quantizer the network uses.
    pub act_quantizer: &'a dyn Quantizer,
    /// The weight quantizer the network uses.
    pub weight_quantizer: &'a dyn Quantizer,
    /// The complexity cost (its summary goes into the metadata).
    pub cost: &'a dyn ComplexityCost,
}

/// How one quantized conv was exported.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerExport {
    /// Searchable-layer index.
    pub index: usize,
    /// Layer name.
    pub name: String,
    /// Weight bits.
    pub wbit: u32,
    /// Activation bits.
    pub abit: u32,
    /// The activation quantizer's form.
    pub act: QuantExport,
    /// The weight quantizer's form (`Identity` for 32-bit weights).
    pub weight: QuantExport,
}

/// The lowered graph and, per quantized conv, how it was written.
#[derive(Debug)]
pub struct Lowered {
    /// The graph's nodes, initializers, input and output.
    pub emitter: Emitter,
    /// One entry per searchable layer, in order.
    pub layers: Vec<LayerExport>,
}

fn ints(v: &[usize]) -> AttrValue {
    AttrValue::Ints(v.iter().map(|&x| x as i64).collect())
}

fn host(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn dims(t: &candle_core::Tensor) -> Vec<i64> {
    t.dims().iter().map(|&d| d as i64).collect()
}

/// Looks up `name` in the network's tensors.
fn param(net: &Network, name: &str) -> Result<candle_core::Tensor> {
    net.params()
        .get(name)
        .map(|p| p.var.as_tensor().clone())
        .ok_or_else(|| ExportError::Core(edmips_core::Error::msg(format!("the network has no tensor `{name}`"))))
}

/// The batch dimension: fixed at `batch`, or the free `N`.
pub fn batch_dim(batch: Option<usize>) -> Dim {
    match batch {
        Some(b) => Dim::Value(b as i64),
        None => Dim::Param("N".into()),
    }
}

/// Lowers `input.net` for `format`, with the batch dimension fixed at `batch` (or free).
pub fn lower(input: &ExportInput, format: Format, batch: Option<usize>) -> Result<Lowered> {
    let net = input.net;
    let bits = match net.mode() {
        LayerMode::Search { .. } => return Err(ExportError::SearchNetwork),
        _ => net.chosen_bits()?,
    };
    let graph = net.graph();
    let mut e = Emitter::new(input.config_name);
    let mut vals: Vec<String> = vec![String::new(); graph.nodes.len()];
    vals[0] = e.unique("input");
    let mut layers = Vec::with_capacity(bits.len());
    let with_batch = |d: &[usize]| -> Vec<Dim> {
        std::iter::once(batch_dim(batch)).chain(d.iter().map(|&v| Dim::Value(v as i64))).collect()
    };
    let chw = |s: (usize, usize, usize)| with_batch(&[s.0, s.1, s.2]);
    const OUT: &[&str] = &["logits"];
    let states = net.learned_states();
    for (ni, node) in graph.nodes.iter().enumerate().skip(1) {
        let ins: Vec<String> = node.inputs.iter().map(|&j| vals[j].clone()).collect();
        let in_shape = node.inputs.first().map(|&j| graph.nodes[j].shape).unwrap_or(node.shape);
        let x = ins.first().cloned().unwrap_or_default();
        let is_out = ni == graph.output;
        let y = match &node.op {
            NodeOp::Input => {
                return Err(ExportError::Core(edmips_core::Error::msg(format!("node {ni}: a second input node"))))
            }
            NodeOp::Conv { name, kernel, stride, pad, .. } => {
                let w = param(net, &format!("{name}.weight"))?;
                let w = e.tensor(&format!("{name}.weight"), dims(&w), host(&w)?);
                let [pt, pb, pl, pr] = pad.0;
                e.node(
                    name,
                    "Conv",
                    vec![x, w],
                    vec![
                        ("kernel_shape", ints(&[kernel.0, kernel.1])),
                        ("strides", ints(&[*stride, *stride])),
                        ("pads", ints(&[pt, pl, pb, pr])),
                    ],
                )
            }
            NodeOp::QuantConv { layer, .. } => {
                let info = &graph.searchable[*layer];
                let (wbit, abit) = bits[*layer];
                let not_exportable = |q: &dyn Quantizer, operand: Operand, b: u32| ExportError::NotExportable {
                    plugin: q.id().to_string(),
                    operand: operand.to_string(),
                    bits: b,
                    layer: info.index,
                    name: info.name.clone(),
                };
                let (act_learned, weight_learned) = match states.get(*layer) {
                    Some((a, w)) => (a.tensors_of(0), w.tensors_of(0)),
                    None => (Vec::new(), Vec::new()),
                };
                let act = input
                    .act_quantizer
                    .export_form(Operand::Activation, abit, None, &act_learned)?
                    .ok_or_else(|| not_exportable(input.act_quantizer, Operand::Activation, abit))?;
                let xq = emit_quant(&mut e, format, &format!("{}.act_quant", info.name), &x, &act);
                e.annotate_new(&chw(in_shape), OUT);
                let w = param(net, &format!("{}.weight", info.name))?;
                let (weight, stored) = if Precision::is_full(wbit) {
                    (QuantExport::Identity, w)
                } else {
                    let form = input
                        .weight_quantizer
                        .export_form(Operand::Weight, wbit, Some(&w), &weight_learned)?
                        .ok_or_else(|| not_exportable(input.weight_quantizer, Operand::Weight, wbit))?;
                    (form, input.weight_quantizer.quantize(&w, Operand::Weight, wbit, &weight_learned)?)
                };
                let mut wv = e.tensor(&format!("{}.weight", info.name), dims(&stored), host(&stored)?);
                if format == Format::Qonnx {
                    wv = emit_quant(&mut e, format, &format!("{}.weight_quant", info.name), &wv, &weight);
                    let wd: Vec<Dim> = stored.dims().iter().map(|&d| Dim::Value(d as i64)).collect();
                    e.annotate_new(&wd, OUT);
                }
                let [pt, pb, pl, pr] = info.padding;
                let out = e.node(
                    &info.name,
                    "Conv",
                    vec![xq, wv],
                    vec![
                        ("kernel_shape", ints(&[info.kernel.0, info.kernel.1])),
                        ("strides", ints(&[info.stride.0, info.stride.1])),
                        ("pads", ints(&[pt, pl, pb, pr])),
                    ],
                );
                layers.push(LayerExport { index: info.index, name: info.name.clone(), wbit, abit, act, weight });
                out
            }
            NodeOp::BatchNorm { name, opts } => {
                let c = node.shape.0;
                let get = |suffix: &str, default: f32| -> Result<Vec<f32>> {
                    match net.params().get(&format!("{name}.{suffix}")) {
                        Some(p) => host(p.var.as_tensor()),
                        None => Ok(vec![default; c]),
                    }
                };
                let scale = e.tensor(&format!("{name}.weight"), vec![c as i64], get("weight", 1.0)?);
                let bias = e.tensor(&format!("{name}.bias"), vec![c as i64], get("bias", 0.0)?);
                let mean = param(net, &format!("{name}.running_mean"))?;
                let var = param(net, &format!("{name}.running_var"))?;
                let mean = e.tensor(&format!("{name}.running_mean"), vec![c as i64], host(&mean)?);
                let var = e.tensor(&format!("{name}.running_var"), vec![c as i64], host(&var)?);
                e.node(
                    name,
                    "BatchNormalization",
                    vec![x, scale, bias, mean, var],
                    vec![("epsilon", AttrValue::Float(opts.eps as f32))],
                )
            }
            NodeOp::Relu => e.node(&format!("relu_{ni}"), "Relu", vec![x], vec![]),
            NodeOp::MaxPool(o) | NodeOp::AvgPool(o) => {
                let (ph, pw) = o.padding;
                let mut attrs = vec![
                    ("kernel_shape", ints(&[o.kernel.0, o.kernel.1])),
                    ("strides", ints(&[o.stride.0, o.stride.1])),
                    ("pads", ints(&[ph, pw, ph, pw])),
                    ("ceil_mode", AttrValue::Int(o.ceil_mode as i64)),
                ];
                let (base, op) = if matches!(node.op, NodeOp::MaxPool(_)) {
                    ("maxpool", "MaxPool")
                } else {
                    attrs.push(("count_include_pad", AttrValue::Int(o.count_include_pad as i64)));
                    ("avgpool", "AveragePool")
                };
                e.node(&format!("{base}_{ni}"), op, vec![x], attrs)
            }
            NodeOp::GlobalAvgPool => e.node(&format!("global_avgpool_{ni}"), "GlobalAveragePool", vec![x], vec![]),
            NodeOp::Add => e.node(&format!("add_{ni}"), "Add", ins, vec![]),
            NodeOp::Concat => e.node(&format!("concat_{ni}"), "Concat", ins, vec![("axis", AttrValue::Int(1))]),
            NodeOp::Linear { name, .. } => {
                let flat = e.node(&format!("{name}.flatten"), "Flatten", vec![x], vec![("axis", AttrValue::Int(1))]);
                e.annotate_new(&with_batch(&[in_shape.0 * in_shape.1 * in_shape.2]), OUT);
                let w = param(net, &format!("{name}.weight"))?;
                let b = param(net, &format!("{name}.bias"))?;
                let w = e.tensor(&format!("{name}.weight"), dims(&w), host(&w)?);
                let b = e.tensor(&format!("{name}.bias"), dims(&b), host(&b)?);
                let out = if is_out { "logits".to_string() } else { name.clone() };
                e.node(&out, "Gemm", vec![flat, w, b], vec![("transB", AttrValue::Int(1))])
            }
        };
        let out_shape = match node.op {
            NodeOp::Linear { .. } => with_batch(&[node.shape.0]),
            _ => chw(node.shape),
        };
        e.annotate_new(&out_shape, OUT);
        vals[ni] = y;
    }
    let out = &vals[graph.output];
    if out != "logits" {
        e.node("logits", "Flatten", vec![out.clone()], vec![("axis", AttrValue::Int(1))]);
    }
    e.annotate_new(&[], OUT);
    Ok(Lowered { emitter: e, layers })
}
