//! ResNet-18 and ResNet-50 in the EdMIPS topology (`mixresnet.py` / `quant_resnet.py`; decisions.md
//! R8, D14, D15, D18).
//!
//! He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, as modified by Cai &
//! Vasconcelos, "Rethinking Differentiable Search for Mixed-Precision Neural Networks", CVPR
//! 2020:
//!
//! * stem: full-precision `conv1` 7×7/2 (3→64, pad 3) → `maxpool` 3/2 pad 1 → `bn1`, no ReLU;
//! * stages `layer1..4` (64/128/256/512 planes, strides 1/2/2/2) of [`blocks`](crate::blocks);
//! * head: `relu` → 7×7 average pool (the input must be 224: the reference asserts a 7×7 map)
//!   → `fc` with bias, full precision.
//!
//! Searchable layers: 19 (ResNet-18) and 52 (ResNet-50). Convolutions use He fan-out init.

use edmips_core::graph::{InitScheme, NetBuilder, Pad, PoolOpts};
use edmips_core::traits::backbone::InputSpec;
use edmips_core::{Backbone, Params, Result, Table};

use crate::blocks::{stage, Block};

/// The registry id of ResNet-18.
pub const ID18: &str = "resnet18";
/// The registry id of ResNet-50.
pub const ID50: &str = "resnet50";

/// An EdMIPS ImageNet ResNet.
#[derive(Debug, Clone)]
pub struct ResNet {
    id: &'static str,
    block: Block,
    blocks: [usize; 4],
}

impl ResNet {
    /// ResNet-18: basic blocks `[2, 2, 2, 2]`.
    pub fn resnet18() -> Self {
        ResNet { id: ID18, block: Block::Basic, blocks: [2, 2, 2, 2] }
    }

    /// ResNet-50: bottleneck blocks `[3, 4, 6, 3]`.
    pub fn resnet50() -> Self {
        ResNet { id: ID50, block: Block::Bottleneck, blocks: [3, 4, 6, 3] }
    }
}

impl Backbone for ResNet {
    fn id(&self) -> &str {
        self.id
    }

    fn input(&self) -> InputSpec {
        InputSpec::imagenet(224, 256)
    }

    fn build(&self, b: &mut NetBuilder) -> Result<()> {
        b.set_init(InitScheme::HeFanOut);
        let x = b.input();
        let x = b.conv("conv1", x, 64, (7, 7), 2, Pad::all(3))?;
        let x = b.max_pool(x, PoolOpts::new(3, 2, 1))?;
        let mut x = b.batch_norm("bn1", x)?;
        for (i, (&planes, &n)) in [64usize, 128, 256, 512].iter().zip(&self.blocks).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            x = stage(b, self.block, &format!("layer{}", i + 1), x, planes, n, stride)?;
        }
        let x = b.relu(x)?;
        b.expect_spatial(x, (7, 7), "avgpool")?;
        let x = b.avg_pool(x, PoolOpts::new(7, 7, 0))?;
        let y = b.linear("fc", x)?;
        b.output(y)
    }
}

fn build18(t: &Table) -> Result<Box<dyn Backbone>> {
    Params::new(ID18, t).deny_unknown(&[])?;
    Ok(Box::new(ResNet::resnet18()))
}

fn build50(t: &Table) -> Result<Box<dyn Backbone>> {
    Params::new(ID50, t).deny_unknown(&[])?;
    Ok(Box::new(ResNet::resnet50()))
}

edmips_core::register_backbone! {
    id: ID18,
    summary: "EdMIPS ResNet-18 (224x224; stem conv-maxpool-BN, BN before each quantized conv; 19 searchable layers)",
    build: build18,
}

edmips_core::register_backbone! {
    id: ID50,
    summary: "EdMIPS ResNet-50 (224x224; bottleneck blocks; 52 searchable layers)",
    build: build50,
}
