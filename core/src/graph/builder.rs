//! The shape-inferring network builder.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer_info::{LayerInfo, LayerKind};
use crate::traits::backbone::{Backbone, InputSpec};

/// Handle to a declared node (its output value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub usize);

/// Zero padding of a convolution or pooling window: (top, bottom, left, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pad(pub [usize; 4]);

impl Pad {
    /// No padding ("valid").
    pub fn none() -> Self {
        Pad([0; 4])
    }
    /// The same padding `p` on all four sides.
    pub fn all(p: usize) -> Self {
        Pad([p; 4])
    }
    /// "Same" padding for an odd square kernel `k`: `k/2` on every side.
    pub fn same(k: usize) -> Self {
        Pad([k / 2; 4])
    }
    /// `ph` on top and bottom, `pw` on left and right (PyTorch's `padding=(ph, pw)`).
    pub fn hw(ph: usize, pw: usize) -> Self {
        Pad([ph, ph, pw, pw])
    }
    /// Whether all four sides are equal.
    pub fn is_symmetric(&self) -> bool {
        self.0.iter().all(|&p| p == self.0[0])
    }
}

/// Weight initialisation of convolutions (D18). Linear layers keep PyTorch's default
/// (`U(±1/sqrt(fan_in))` for weight and bias) unless the scheme is a truncated normal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum InitScheme {
    /// `N(0, sqrt(2 / (kh·kw·C_out)))`: He, fan-out (the ResNets).
    HeFanOut,
    /// Normal with this std truncated at ±2 std (GoogLeNet 0.01, Inception-V3 0.1); applied to
    /// linear weights too.
    TruncNormal {
        /// The standard deviation before truncation.
        std: f64,
    },
}

/// Batch-norm options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BnOpts {
    /// Added to the variance.
    pub eps: f64,
    /// Running-statistics momentum (PyTorch convention: `new = (1-m)·old + m·batch`).
    pub momentum: f64,
    /// Learnable scale and shift.
    pub affine: bool,
}

impl Default for BnOpts {
    fn default() -> Self {
        BnOpts { eps: 1e-5, momentum: 0.1, affine: true }
    }
}

/// Pooling options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolOpts {
    /// Window (height, width).
    pub kernel: (usize, usize),
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Padding (symmetric per axis: height, width). Max pooling pads with -inf.
    pub padding: (usize, usize),
    /// PyTorch `ceil_mode`.
    pub ceil_mode: bool,
    /// Average pooling only: whether padded zeros count in the divisor (`count_include_pad`).
    pub count_include_pad: bool,
}

impl PoolOpts {
    /// A square window `k` with stride `s` and padding `p`, floor mode, padding counted.
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        PoolOpts { kernel: (k, k), stride: (s, s), padding: (p, p), ceil_mode: false, count_include_pad: true }
    }
    /// The same with `ceil_mode = true`.
    pub fn ceil(mut self) -> Self {
        self.ceil_mode = true;
        self
    }

    /// Output size along one axis, as PyTorch computes it.
    pub fn out_size(input: usize, k: usize, s: usize, p: usize, ceil: bool) -> Option<usize> {
        let span = (input + 2 * p).checked_sub(k)?;
        let mut out = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
        // PyTorch: the last window must start inside the input or the left padding.
        if ceil && (out - 1) * s >= input + p {
            out -= 1;
        }
        Some(out)
    }
}

/// What a node computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeOp {
    /// The network input.
    Input,
    /// A full-precision convolution without bias (parameter `<name>.weight`).
    Conv {
        /// Parameter prefix.
        name: String,
        /// Kernel (height, width).
        kernel: (usize, usize),
        /// Stride (both axes).
        stride: usize,
        /// Padding.
        pad: Pad,
        /// Initialisation.
        init: InitScheme,
    },
    /// A quantizable convolution without bias: searchable layer `layer` of [`Graph::searchable_layers`].
    QuantConv {
        /// Index into [`Graph::searchable_layers`].
        layer: usize,
        /// Initialisation.
        init: InitScheme,
    },
    /// Batch normalisation over channels.
    BatchNorm {
        /// Parameter prefix (`.weight`, `.bias`, `.running_mean`, `.running_var`).
        name: String,
        /// Options.
        opts: BnOpts,
    },
    /// `max(x, 0)`.
    Relu,
    /// Max pooling (padding is -inf).
    MaxPool(PoolOpts),
    /// Average pooling.
    AvgPool(PoolOpts),
    /// Mean over the spatial axes, keeping a 1×1 map.
    GlobalAvgPool,
    /// Element-wise sum of two inputs.
    Add,
    /// Concatenation along channels.
    Concat,
    /// Flatten then fully connected with bias (`<name>.weight`, `<name>.bias`).
    Linear {
        /// Parameter prefix.
        name: String,
        /// Input features.
        in_features: usize,
        /// Initialisation of the weight.
        init: InitScheme,
    },
}

/// One declared node: its op, its inputs and its output shape (C, H, W).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// What it computes.
    pub op: NodeOp,
    /// Input node ids.
    pub inputs: Vec<usize>,
    /// Output shape per sample: (channels, height, width).
    pub shape: (usize, usize, usize),
}

/// A declared network: nodes in topological order and the searchable layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The backbone id.
    pub backbone: String,
    /// Input description.
    pub input: InputSpec,
    /// Number of classes of the final layer.
    pub num_classes: usize,
    /// Nodes in declaration order; node 0 is the input.
    pub nodes: Vec<Node>,
    /// The output node.
    pub output: usize,
    /// The searchable (quantizable) convolutions, in declaration order.
    pub searchable: Vec<LayerInfo>,
}

impl Graph {
    /// The searchable layers in declaration order.
    pub fn searchable_layers(&self) -> &[LayerInfo] {
        &self.searchable
    }

    /// The layers with weights that are not searched and stay full precision (EdMIPS: the stem
    /// convolution and the classifier), in declaration order, described like the searchable
    /// ones (`index` counts among these; a linear layer is a 1×1 convolution on a 1×1 map), so
    /// a cost can count them ([`ComplexityCost::set_fixed_layers`](crate::ComplexityCost::set_fixed_layers)).
    pub fn fixed_layers(&self) -> Vec<LayerInfo> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let input = node.inputs.first().map(|&i| self.nodes[i].shape).unwrap_or((0, 0, 0));
            let info = match &node.op {
                NodeOp::Conv { name, kernel, stride, pad, .. } => LayerInfo {
                    index: out.len(),
                    name: name.clone(),
                    kind: LayerKind::Conv2d,
                    in_channels: input.0,
                    out_channels: node.shape.0,
                    kernel: *kernel,
                    stride: (*stride, *stride),
                    padding: pad.0,
                    input_hw: (input.1, input.2),
                    output_hw: (node.shape.1, node.shape.2),
                },
                NodeOp::Linear { name, in_features, .. } => LayerInfo {
                    index: out.len(),
                    name: name.clone(),
                    kind: LayerKind::Linear,
                    in_channels: *in_features,
                    out_channels: node.shape.0,
                    kernel: (1, 1),
                    stride: (1, 1),
                    padding: [0; 4],
                    input_hw: (1, 1),
                    output_hw: (1, 1),
                },
                _ => continue,
            };
            out.push(info);
        }
        out
    }
}

/// Shape-inferring builder that backbones declare their networks on.
#[derive(Debug)]
pub struct NetBuilder {
    graph: Graph,
    init: InitScheme,
    bn: BnOpts,
    output_set: bool,
}

impl NetBuilder {
    /// Declares `backbone` for `num_classes` classes and returns its graph.
    pub fn declare(backbone: &dyn Backbone, num_classes: usize) -> Result<Graph> {
        Self::declare_with_input(backbone, backbone.input(), num_classes)
    }

    /// Like [`declare`](Self::declare) but with an explicit input spec (e.g. a different size).
    pub fn declare_with_input(backbone: &dyn Backbone, input: InputSpec, num_classes: usize) -> Result<Graph> {
        if num_classes == 0 {
            return Err(Error::config(backbone.id(), "num_classes", "must be at least 1"));
        }
        let shape = (input.channels, input.size, input.size);
        let mut b = NetBuilder {
            graph: Graph {
                backbone: backbone.id().to_string(),
                input,
                num_classes,
                nodes: vec![Node { op: NodeOp::Input, inputs: vec![], shape }],
                output: 0,
                searchable: vec![],
            },
            init: InitScheme::HeFanOut,
            bn: BnOpts::default(),
            output_set: false,
        };
        backbone.build(&mut b)?;
        if !b.output_set {
            return Err(Error::msg(format!("backbone `{}` declared no output", backbone.id())));
        }
        Ok(b.graph)
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        NodeId(0)
    }

    /// The number of classes the final layer must produce.
    pub fn num_classes(&self) -> usize {
        self.graph.num_classes
    }

    /// Output shape (C, H, W) of a node.
    pub fn shape(&self, x: NodeId) -> (usize, usize, usize) {
        self.graph.nodes[x.0].shape
    }

    /// Sets the initialisation of convolutions declared from now on.
    pub fn set_init(&mut self, init: InitScheme) {
        self.init = init;
    }

    /// Sets the default batch-norm options used by [`batch_norm`](Self::batch_norm).
    pub fn set_bn_defaults(&mut self, opts: BnOpts) {
        self.bn = opts;
    }

    fn push(&mut self, op: NodeOp, inputs: Vec<usize>, shape: (usize, usize, usize)) -> NodeId {
        self.graph.nodes.push(Node { op, inputs, shape });
        NodeId(self.graph.nodes.len() - 1)
    }

    fn conv_shape(
        &self,
        name: &str,
        x: NodeId,
        kernel: (usize, usize),
        stride: usize,
        pad: Pad,
    ) -> Result<(usize, usize, usize, usize, usize)> {
        let (c, h, w) = self.shape(x);
        let [pt, pb, pl, pr] = pad.0;
        let oh = LayerInfo::conv_out(h, kernel.0, stride, pt, pb);
        let ow = LayerInfo::conv_out(w, kernel.1, stride, pl, pr);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok((c, h, w, oh, ow)),
            _ => Err(Error::Shape {
                context: format!("{}: {name}", self.graph.backbone),
                expected: format!("an input of at least {}x{} after padding", kernel.0, kernel.1),
                found: format!("{h}x{w} with padding {:?}", pad.0),
            }),
        }
    }

    /// A full-precision convolution without bias (the first conv of the EdMIPS networks).
    pub fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        out: usize,
        kernel: (usize, usize),
        stride: usize,
        pad: Pad,
    ) -> Result<NodeId> {
        let (_, _, _, oh, ow) = self.conv_shape(name, x, kernel, stride, pad)?;
        let op = NodeOp::Conv { name: name.to_string(), kernel, stride, pad, init: self.init };
        Ok(self.push(op, vec![x.0], (out, oh, ow)))
    }

    /// A quantizable convolution without bias: mixed during search, fixed-bit in retraining,
    /// full precision otherwise. Its [`LayerInfo`] is recorded in declaration order.
    pub fn quant_conv(
        &mut self,
        name: &str,
        x: NodeId,
        out: usize,
        kernel: (usize, usize),
        stride: usize,
        pad: Pad,
    ) -> Result<NodeId> {
        let (c, h, w, oh, ow) = self.conv_shape(name, x, kernel, stride, pad)?;
        let index = self.graph.searchable.len();
        self.graph.searchable.push(LayerInfo {
            index,
            name: name.to_string(),
            kind: LayerKind::Conv2d,
            in_channels: c,
            out_channels: out,
            kernel,
            stride: (stride, stride),
            padding: pad.0,
            input_hw: (h, w),
            output_hw: (oh, ow),
        });
        Ok(self.push(NodeOp::QuantConv { layer: index, init: self.init }, vec![x.0], (out, oh, ow)))
    }

    /// Batch normalisation with the builder's default options.
    pub fn batch_norm(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let opts = self.bn;
        self.batch_norm_with(name, x, opts)
    }

    /// Batch normalisation with explicit options.
    pub fn batch_norm_with(&mut self, name: &str, x: NodeId, opts: BnOpts) -> Result<NodeId> {
        let s = self.shape(x);
        Ok(self.push(NodeOp::BatchNorm { name: name.to_string(), opts }, vec![x.0], s))
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        let s = self.shape(x);
        Ok(self.push(NodeOp::Relu, vec![x.0], s))
    }

    fn pool_shape(&self, what: &str, x: NodeId, o: &PoolOpts) -> Result<(usize, usize, usize)> {
        let (c, h, w) = self.shape(x);
        let oh = PoolOpts::out_size(h, o.kernel.0, o.stride.0, o.padding.0, o.ceil_mode);
        let ow = PoolOpts::out_size(w, o.kernel.1, o.stride.1, o.padding.1, o.ceil_mode);
        if o.padding.0 * 2 > o.kernel.0 || o.padding.1 * 2 > o.kernel.1 {
            return Err(Error::config(&self.graph.backbone, what, "pool padding must be at most half the window"));
        }
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok((c, oh, ow)),
            _ => Err(Error::Shape {
                context: format!("{}: {what}", self.graph.backbone),
                expected: format!("an input of at least {}x{}", o.kernel.0, o.kernel.1),
                found: format!("{h}x{w}"),
            }),
        }
    }

    /// Max pooling; padding is -inf, so padded positions never win.
    pub fn max_pool(&mut self, x: NodeId, opts: PoolOpts) -> Result<NodeId> {
        let s = self.pool_shape("max_pool", x, &opts)?;
        Ok(self.push(NodeOp::MaxPool(opts), vec![x.0], s))
    }

    /// Average pooling.
    pub fn avg_pool(&mut self, x: NodeId, opts: PoolOpts) -> Result<NodeId> {
        let s = self.pool_shape("avg_pool", x, &opts)?;
        Ok(self.push(NodeOp::AvgPool(opts), vec![x.0], s))
    }

    /// Mean over the spatial axes (→ C×1×1).
    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        let (c, _, _) = self.shape(x);
        Ok(self.push(NodeOp::GlobalAvgPool, vec![x.0], (c, 1, 1)))
    }

    /// Element-wise sum; the shapes must agree.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa != sb {
            return Err(Error::Shape {
                context: format!("{}: residual add", self.graph.backbone),
                expected: format!("{sa:?}"),
                found: format!("{sb:?}"),
            });
        }
        Ok(self.push(NodeOp::Add, vec![a.0, b.0], sa))
    }

    /// Concatenation along channels; the spatial sizes must agree.
    pub fn concat(&mut self, xs: &[NodeId]) -> Result<NodeId> {
        let Some(first) = xs.first() else {
            return Err(Error::msg("concat of no inputs"));
        };
        let (_, h, w) = self.shape(*first);
        let mut c = 0;
        for x in xs {
            let (cx, hx, wx) = self.shape(*x);
            if (hx, wx) != (h, w) {
                return Err(Error::Shape {
                    context: format!("{}: concat", self.graph.backbone),
                    expected: format!("spatial size {h}x{w}"),
                    found: format!("{hx}x{wx}"),
                });
            }
            c += cx;
        }
        Ok(self.push(NodeOp::Concat, xs.iter().map(|x| x.0).collect(), (c, h, w)))
    }

    /// Flatten, then a fully connected layer with bias to [`num_classes`](Self::num_classes).
    pub fn linear(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let (c, h, w) = self.shape(x);
        let out = self.graph.num_classes;
        let op = NodeOp::Linear { name: name.to_string(), in_features: c * h * w, init: self.init };
        Ok(self.push(op, vec![x.0], (out, 1, 1)))
    }

    /// Fails unless `x` has spatial size `hw`: the reference's input-size asserts (D15), as an
    /// error that names the input size the backbone needs.
    pub fn expect_spatial(&self, x: NodeId, hw: (usize, usize), what: &str) -> Result<()> {
        let (_, h, w) = self.shape(x);
        if (h, w) != hw {
            let size = self.graph.input.size;
            return Err(Error::Shape {
                context: format!("{} {what}", self.graph.backbone),
                expected: format!("a {}x{} map (input {size}x{size} for this backbone)", hw.0, hw.1),
                found: format!("{h}x{w}"),
            });
        }
        Ok(())
    }

    /// Marks the network output (the logits node).
    pub fn output(&mut self, y: NodeId) -> Result<()> {
        self.graph.output = y.0;
        self.output_set = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_out_size_matches_pytorch() {
        // GoogLeNet maxpool1: 112 -> 56 with k3 s2 ceil; maxpool4: 14 -> 7 with k2 s2 ceil.
        assert_eq!(PoolOpts::out_size(112, 3, 2, 0, true), Some(56));
        assert_eq!(PoolOpts::out_size(14, 2, 2, 0, true), Some(7));
        // ResNet maxpool 112 -> 56 with k3 s2 p1 floor.
        assert_eq!(PoolOpts::out_size(112, 3, 2, 1, false), Some(56));
        // Inception 147 -> 73 k3 s2 floor.
        assert_eq!(PoolOpts::out_size(147, 3, 2, 0, false), Some(73));
        // ceil mode where the last window would start in the right padding: 5 with k2 s2 p1.
        assert_eq!(PoolOpts::out_size(5, 2, 2, 1, true), Some(3));
        assert_eq!(PoolOpts::out_size(4, 2, 2, 0, true), Some(2));
        assert_eq!(PoolOpts::out_size(5, 3, 2, 0, true), Some(2));
    }
}
