//! GoogLeNet in the EdMIPS topology (`mixgoogle.py` / `quant_googlenet.py`; decisions.md R10,
//! D15, D16, D18).
//!
//! Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, as modified by Cai &
//! Vasconcelos, "Rethinking Differentiable Search for Mixed-Precision Neural Networks", CVPR
//! 2020:
//!
//! * stem: full-precision `conv1` 7×7/2 (3→64, pad 3) → `maxpool1` 3/2 ceil → `conv2` BQC
//!   64→64 1×1 → `conv3` BQC 64→192 3×3 → `maxpool2` 3/2 ceil (→ 28);
//! * nine inception modules `inception3a..5b`, with `maxpool3` (3/2 ceil) after 3b and
//!   `maxpool4` (2/2 ceil) after 4e;
//! * head: `inception5b_bn` → ReLU → global average pool (the reference asserts a 7×7 map, so
//!   the input must be 224) → `fc`.
//!
//! Inception module: `y = bn(x)`; `branch1` = quant 1×1 on `y`; `branch2` = quant 1×1
//! (`branch2_1`) → BQC 3×3 (`branch2_2`); `branch3` = quant 1×1 (`branch3_1`) → BQC **5×5**
//! (`branch3_2`; torchvision uses 3×3); `branch4` = BQC 1×1 on `maxpool(x, 3, 1, 1, ceil)` of
//! the **raw** input; output the concatenation. Every BN has eps 1e-3. Conv and linear weights
//! use a truncated normal (σ 0.01). 56 searchable layers.

use edmips_core::graph::{BnOpts, InitScheme, NetBuilder, NodeId, Pad, PoolOpts};
use edmips_core::traits::backbone::InputSpec;
use edmips_core::{Backbone, Params, Result, Table};

use crate::basic_quant_conv::bqc;

/// The registry id.
pub const ID: &str = "googlenet";

/// The EdMIPS GoogLeNet.
#[derive(Debug, Clone, Default)]
pub struct GoogLeNet;

/// Inception module widths: (c1, c3r, c3, c5r, c5, pool_proj).
type Widths = (usize, usize, usize, usize, usize, usize);

fn inception(b: &mut NetBuilder, name: &str, x: NodeId, w: Widths) -> Result<NodeId> {
    let (c1, c3r, c3, c5r, c5, pp) = w;
    let n = |s: &str| format!("{name}.{s}");
    let y = b.batch_norm(&n("bn"), x)?;
    let b1 = b.quant_conv(&n("branch1"), y, c1, (1, 1), 1, Pad::none())?;
    let t = b.quant_conv(&n("branch2_1"), y, c3r, (1, 1), 1, Pad::none())?;
    let b2 = bqc(b, &n("branch2_2"), t, c3, (3, 3), 1, Pad::all(1))?;
    let t = b.quant_conv(&n("branch3_1"), y, c5r, (1, 1), 1, Pad::none())?;
    let b3 = bqc(b, &n("branch3_2"), t, c5, (5, 5), 1, Pad::all(2))?;
    let p = b.max_pool(x, PoolOpts::new(3, 1, 1).ceil())?;
    let b4 = bqc(b, &n("branch4"), p, pp, (1, 1), 1, Pad::none())?;
    b.concat(&[b1, b2, b3, b4])
}

impl Backbone for GoogLeNet {
    fn id(&self) -> &str {
        ID
    }

    fn input(&self) -> InputSpec {
        InputSpec::imagenet(224, 256)
    }

    fn build(&self, b: &mut NetBuilder) -> Result<()> {
        b.set_init(InitScheme::TruncNormal { std: 0.01 });
        b.set_bn_defaults(BnOpts { eps: 1e-3, ..BnOpts::default() });
        let x = b.input();
        let x = b.conv("conv1", x, 64, (7, 7), 2, Pad::all(3))?;
        let x = b.max_pool(x, PoolOpts::new(3, 2, 0).ceil())?;
        let x = bqc(b, "conv2", x, 64, (1, 1), 1, Pad::none())?;
        let x = bqc(b, "conv3", x, 192, (3, 3), 1, Pad::all(1))?;
        let mut x = b.max_pool(x, PoolOpts::new(3, 2, 0).ceil())?;
        let modules: [(&str, Widths); 9] = [
            ("inception3a", (64, 96, 128, 16, 32, 32)),
            ("inception3b", (128, 128, 192, 32, 96, 64)),
            ("inception4a", (192, 96, 208, 16, 48, 64)),
            ("inception4b", (160, 112, 224, 24, 64, 64)),
            ("inception4c", (128, 128, 256, 24, 64, 64)),
            ("inception4d", (112, 144, 288, 32, 64, 64)),
            ("inception4e", (256, 160, 320, 32, 128, 128)),
            ("inception5a", (256, 160, 320, 32, 128, 128)),
            ("inception5b", (384, 192, 384, 48, 128, 128)),
        ];
        for (name, w) in modules {
            x = inception(b, name, x, w)?;
            if name == "inception3b" {
                x = b.max_pool(x, PoolOpts::new(3, 2, 0).ceil())?;
            } else if name == "inception4e" {
                x = b.max_pool(x, PoolOpts::new(2, 2, 0).ceil())?;
            }
        }
        let x = b.batch_norm("inception5b_bn", x)?;
        let x = b.relu(x)?;
        b.expect_spatial(x, (7, 7), "avgpool")?;
        let x = b.global_avg_pool(x)?;
        let y = b.linear("fc", x)?;
        b.output(y)
    }
}

fn build(t: &Table) -> Result<Box<dyn Backbone>> {
    Params::new(ID, t).deny_unknown(&[])?;
    Ok(Box::new(GoogLeNet))
}

edmips_core::register_backbone! {
    id: ID,
    summary: "EdMIPS GoogLeNet (224x224; BN before quantized convs, real 5x5 branch; 56 searchable layers)",
    build: build,
}
