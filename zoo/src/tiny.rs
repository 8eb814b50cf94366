//! `tiny`: the small ResNet-shaped network of the golden end-to-end test
//! (`shared/golden/tiny_search_step.json`), built from the EdMIPS BasicBlock (Cai & Vasconcelos,
//! CVPR 2020; see [`blocks`](crate::blocks)).
//!
//! 16×16 RGB input; full-precision `conv1` 3→8 3×3 (stride 1, pad 1) → `maxpool` 3/2 pad 1
//! (→ 8×8) → `bn1` → `layer1.0` BasicBlock 8→8 → `layer2.0` BasicBlock 8→16 stride 2 with
//! downsample (→ 4×4) → `relu` → 4×4 average pool → `fc` 16→classes. Five searchable layers:
//! `layer1.0.conv1`, `layer1.0.conv2`, `layer2.0.conv1`, `layer2.0.conv2`,
//! `layer2.0.downsample.0`.

use edmips_core::graph::{InitScheme, NetBuilder, Pad, PoolOpts};
use edmips_core::traits::backbone::InputSpec;
use edmips_core::{Backbone, Params, Result, Table};

use crate::blocks::{block, Block};

/// The registry id.
pub const ID: &str = "tiny";

/// The golden tiny network.
#[derive(Debug, Clone, Default)]
pub struct Tiny;

impl Backbone for Tiny {
    fn id(&self) -> &str {
        ID
    }

    fn input(&self) -> InputSpec {
        InputSpec::cifar(16)
    }

    fn build(&self, b: &mut NetBuilder) -> Result<()> {
        b.set_init(InitScheme::HeFanOut);
        let x = b.input();
        let x = b.conv("conv1", x, 8, (3, 3), 1, Pad::all(1))?;
        let x = b.max_pool(x, PoolOpts::new(3, 2, 1))?;
        let x = b.batch_norm("bn1", x)?;
        let x = block(b, Block::Basic, "layer1.0", x, 8, 1)?;
        let x = block(b, Block::Basic, "layer2.0", x, 16, 2)?;
        let x = b.relu(x)?;
        b.expect_spatial(x, (4, 4), "avgpool")?;
        let x = b.avg_pool(x, PoolOpts::new(4, 4, 0))?;
        let y = b.linear("fc", x)?;
        b.output(y)
    }
}

fn build(t: &Table) -> Result<Box<dyn Backbone>> {
    Params::new(ID, t).deny_unknown(&[])?;
    Ok(Box::new(Tiny))
}

edmips_core::register_backbone! {
    id: ID,
    summary: "Tiny 16x16 ResNet of the golden end-to-end test (2 BasicBlocks, 5 searchable layers)",
    build: build,
}
