//! The residual blocks of the EdMIPS ResNets (`mixresnet.py`, decisions.md R8), shared by
//! [`resnet`](crate::resnet), [`resnet20`](crate::resnet20) and [`tiny`](crate::tiny).
//!
//! These are pre-activation-style blocks where HWGQ acts as the ReLU: every searchable conv is
//! preceded by a batch norm, and the quantizer in front of the conv is the nonlinearity.
//!
//! * The block first computes `y = bn0(x)`. The residual is `y` when the block has a
//!   downsample, and the raw `x` otherwise (D14).
//! * A downsample exists when `stride != 1` or `inplanes != planes · expansion`: a searchable
//!   1×1 conv with the block's stride (`downsample.0`) then a batch norm (`downsample.1`).
//! * There is no ReLU after the addition.
//!
//! Declaration order (= parameter and searchable-layer order) is the reference's registration
//! order: bn0, conv1, bn1, conv2, bn2 (, conv3, bn3), then the downsample.

use edmips_core::graph::{NetBuilder, NodeId, Pad};
use edmips_core::Result;

/// The two residual block types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Two 3×3 convs (expansion 1).
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 (expansion 4).
    Bottleneck,
}

impl Block {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// Declares one block named `prefix` (e.g. `layer2.0`) on `x`, which has `inplanes` channels.
pub fn block(b: &mut NetBuilder, kind: Block, prefix: &str, x: NodeId, planes: usize, stride: usize) -> Result<NodeId> {
    let inplanes = b.shape(x).0;
    let out = planes * kind.expansion();
    let downsample = stride != 1 || inplanes != out;
    let n = |s: &str| format!("{prefix}.{s}");
    let y = b.batch_norm(&n("bn0"), x)?;
    let residual = if downsample { y } else { x };
    let o = match kind {
        Block::Basic => {
            let o = b.quant_conv(&n("conv1"), y, planes, (3, 3), stride, Pad::all(1))?;
            let o = b.batch_norm(&n("bn1"), o)?;
            let o = b.quant_conv(&n("conv2"), o, planes, (3, 3), 1, Pad::all(1))?;
            b.batch_norm(&n("bn2"), o)?
        }
        Block::Bottleneck => {
            let o = b.quant_conv(&n("conv1"), y, planes, (1, 1), 1, Pad::none())?;
            let o = b.batch_norm(&n("bn1"), o)?;
            let o = b.quant_conv(&n("conv2"), o, planes, (3, 3), stride, Pad::all(1))?;
            let o = b.batch_norm(&n("bn2"), o)?;
            let o = b.quant_conv(&n("conv3"), o, out, (1, 1), 1, Pad::none())?;
            b.batch_norm(&n("bn3"), o)?
        }
    };
    let residual = if downsample {
        let r = b.quant_conv(&n("downsample.0"), residual, out, (1, 1), stride, Pad::none())?;
        b.batch_norm(&n("downsample.1"), r)?
    } else {
        residual
    };
    b.add(o, residual)
}

/// Declares stage `name` (e.g. `layer1`): `blocks` blocks of `planes`, the first with `stride`.
pub fn stage(
    b: &mut NetBuilder,
    kind: Block,
    name: &str,
    mut x: NodeId,
    planes: usize,
    blocks: usize,
    stride: usize,
) -> Result<NodeId> {
    for i in 0..blocks {
        x = block(b, kind, &format!("{name}.{i}"), x, planes, if i == 0 { stride } else { 1 })?;
    }
    Ok(x)
}
