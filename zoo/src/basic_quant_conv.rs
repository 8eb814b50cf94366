//! `BasicQuantConv2d` (BQC) of the EdMIPS GoogLeNet and Inception-V3 (decisions.md R10, R11): a batch
//! norm (`<name>.bn`) followed by a searchable convolution (`<name>.conv`). The quantizer in
//! front of the convolution (HWGQ) is the nonlinearity.

use edmips_core::graph::{NetBuilder, NodeId, Pad};
use edmips_core::Result;

/// Declares `BN → quant conv` named `name` on `x`: `out` channels, `kernel` (h, w), `stride`,
/// `pad`. The batch norm uses the builder's default options.
pub fn bqc(
    b: &mut NetBuilder,
    name: &str,
    x: NodeId,
    out: usize,
    kernel: (usize, usize),
    stride: usize,
    pad: Pad,
) -> Result<NodeId> {
    let y = b.batch_norm(&format!("{name}.bn"), x)?;
    b.quant_conv(&format!("{name}.conv"), y, out, kernel, stride, pad)
}
