//! Inception-V3 in the EdMIPS topology (`mixinception.py` / `quant_inception.py`; decisions.md R11,
//! D2, D15, D17, D18).
//!
//! Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016, as
//! modified by Cai & Vasconcelos, "Rethinking Differentiable Search for Mixed-Precision Neural
//! Networks", CVPR 2020. The input is 299×299 (the reference asserts an 8×8 final map).
//!
//! * stem: full-precision `Conv2d_1a_3x3` 3×3/2 valid (→ 149) → BQC `Conv2d_2a_3x3` (→ 147) →
//!   BQC `Conv2d_2b_3x3` pad 1 → max pool 3/2 (→ 73) → BQC `Conv2d_3b_1x1` → BQC
//!   `Conv2d_4a_3x3` (→ 71) → max pool 3/2 (→ 35);
//! * `Mixed_5b..5d` (A), `Mixed_6a` (B, → 17), `Mixed_6b..6e` (C), `Mixed_7a` (D, → 8),
//!   `Mixed_7b..7c` (E);
//! * head: `Mixed_7c_bn` → ReLU → 8×8 average pool → `fc`.
//!
//! "c1x1" below is a searchable conv on `y = bn(x)` (`<module>.bn`); BQC is BN then a
//! searchable conv ([`bqc`]). Pool branches read the **raw** `x`; average pools count the
//! zero padding, every pool is floor mode, and the B/D max-pool branches go into the concat
//! with no conv or BN (D17). Every BN has eps 1e-3. Conv and linear weights use a truncated
//! normal (σ 0.1). Rectangular kernels use `Pad::hw`. 93 searchable layers.

use edmips_core::graph::{BnOpts, InitScheme, NetBuilder, NodeId, Pad, PoolOpts};
use edmips_core::traits::backbone::InputSpec;
use edmips_core::{Backbone, Params, Result, Table};

use crate::basic_quant_conv::bqc;

/// The registry id.
pub const ID: &str = "inception_v3";

/// The EdMIPS Inception-V3.
#[derive(Debug, Clone, Default)]
pub struct InceptionV3;

/// A searchable conv named `name` directly on `y` (no BN of its own).
fn c(b: &mut NetBuilder, name: &str, y: NodeId, out: usize, k: (usize, usize), s: usize, p: Pad) -> Result<NodeId> {
    b.quant_conv(name, y, out, k, s, p)
}

fn avg3(b: &mut NetBuilder, x: NodeId) -> Result<NodeId> {
    b.avg_pool(x, PoolOpts::new(3, 1, 1))
}

fn inception_a(b: &mut NetBuilder, m: &str, x: NodeId, pool_features: usize) -> Result<NodeId> {
    let n = |s: &str| format!("{m}.{s}");
    let y = b.batch_norm(&n("bn"), x)?;
    let b1 = c(b, &n("branch1x1"), y, 64, (1, 1), 1, Pad::none())?;
    let t = c(b, &n("branch5x5_1"), y, 48, (1, 1), 1, Pad::none())?;
    let b5 = bqc(b, &n("branch5x5_2"), t, 64, (5, 5), 1, Pad::all(2))?;
    let t = c(b, &n("branch3x3dbl_1"), y, 64, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch3x3dbl_2"), t, 96, (3, 3), 1, Pad::all(1))?;
    let bd = bqc(b, &n("branch3x3dbl_3"), t, 96, (3, 3), 1, Pad::all(1))?;
    let p = avg3(b, x)?;
    let bp = bqc(b, &n("branch_pool"), p, pool_features, (1, 1), 1, Pad::none())?;
    b.concat(&[b1, b5, bd, bp])
}

fn inception_b(b: &mut NetBuilder, m: &str, x: NodeId) -> Result<NodeId> {
    let n = |s: &str| format!("{m}.{s}");
    let y = b.batch_norm(&n("bn"), x)?;
    let b3 = c(b, &n("branch3x3"), y, 384, (3, 3), 2, Pad::none())?;
    let t = c(b, &n("branch3x3dbl_1"), y, 64, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch3x3dbl_2"), t, 96, (3, 3), 1, Pad::all(1))?;
    let bd = bqc(b, &n("branch3x3dbl_3"), t, 96, (3, 3), 2, Pad::none())?;
    let bp = b.max_pool(x, PoolOpts::new(3, 2, 0))?;
    b.concat(&[b3, bd, bp])
}

fn inception_c(b: &mut NetBuilder, m: &str, x: NodeId, c7: usize) -> Result<NodeId> {
    let n = |s: &str| format!("{m}.{s}");
    let (k17, p17, k71, p71) = ((1, 7), Pad::hw(0, 3), (7, 1), Pad::hw(3, 0));
    let y = b.batch_norm(&n("bn"), x)?;
    let b1 = c(b, &n("branch1x1"), y, 192, (1, 1), 1, Pad::none())?;
    let t = c(b, &n("branch7x7_1"), y, c7, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch7x7_2"), t, c7, k17, 1, p17)?;
    let b7 = bqc(b, &n("branch7x7_3"), t, 192, k71, 1, p71)?;
    let t = c(b, &n("branch7x7dbl_1"), y, c7, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch7x7dbl_2"), t, c7, k71, 1, p71)?;
    let t = bqc(b, &n("branch7x7dbl_3"), t, c7, k17, 1, p17)?;
    let t = bqc(b, &n("branch7x7dbl_4"), t, c7, k71, 1, p71)?;
    let bd = bqc(b, &n("branch7x7dbl_5"), t, 192, k17, 1, p17)?;
    let p = avg3(b, x)?;
    let bp = bqc(b, &n("branch_pool"), p, 192, (1, 1), 1, Pad::none())?;
    b.concat(&[b1, b7, bd, bp])
}

fn inception_d(b: &mut NetBuilder, m: &str, x: NodeId) -> Result<NodeId> {
    let n = |s: &str| format!("{m}.{s}");
    let y = b.batch_norm(&n("bn"), x)?;
    let t = c(b, &n("branch3x3_1"), y, 192, (1, 1), 1, Pad::none())?;
    let b3 = bqc(b, &n("branch3x3_2"), t, 320, (3, 3), 2, Pad::none())?;
    let t = c(b, &n("branch7x7x3_1"), y, 192, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch7x7x3_2"), t, 192, (1, 7), 1, Pad::hw(0, 3))?;
    let t = bqc(b, &n("branch7x7x3_3"), t, 192, (7, 1), 1, Pad::hw(3, 0))?;
    let b7 = bqc(b, &n("branch7x7x3_4"), t, 192, (3, 3), 2, Pad::none())?;
    let bp = b.max_pool(x, PoolOpts::new(3, 2, 0))?;
    b.concat(&[b3, b7, bp])
}

fn inception_e(b: &mut NetBuilder, m: &str, x: NodeId) -> Result<NodeId> {
    let n = |s: &str| format!("{m}.{s}");
    let y = b.batch_norm(&n("bn"), x)?;
    let b1 = c(b, &n("branch1x1"), y, 320, (1, 1), 1, Pad::none())?;
    let t = c(b, &n("branch3x3_1"), y, 384, (1, 1), 1, Pad::none())?;
    let t = b.batch_norm(&n("branch3x3_bn"), t)?;
    let b3a = c(b, &n("branch3x3_2a"), t, 384, (1, 3), 1, Pad::hw(0, 1))?;
    let b3b = c(b, &n("branch3x3_2b"), t, 384, (3, 1), 1, Pad::hw(1, 0))?;
    let t = c(b, &n("branch3x3dbl_1"), y, 448, (1, 1), 1, Pad::none())?;
    let t = bqc(b, &n("branch3x3dbl_2"), t, 384, (3, 3), 1, Pad::all(1))?;
    let u = b.batch_norm(&n("branch3x3dbl_bn"), t)?;
    let bda = c(b, &n("branch3x3dbl_3a"), u, 384, (1, 3), 1, Pad::hw(0, 1))?;
    let bdb = c(b, &n("branch3x3dbl_3b"), u, 384, (3, 1), 1, Pad::hw(1, 0))?;
    let p = avg3(b, x)?;
    let bp = bqc(b, &n("branch_pool"), p, 192, (1, 1), 1, Pad::none())?;
    b.concat(&[b1, b3a, b3b, bda, bdb, bp])
}

impl Backbone for InceptionV3 {
    fn id(&self) -> &str {
        ID
    }

    fn input(&self) -> InputSpec {
        InputSpec::imagenet(299, 342)
    }

    fn build(&self, b: &mut NetBuilder) -> Result<()> {
        b.set_init(InitScheme::TruncNormal { std: 0.1 });
        b.set_bn_defaults(BnOpts { eps: 1e-3, ..BnOpts::default() });
        let x = b.input();
        let x = b.conv("Conv2d_1a_3x3", x, 32, (3, 3), 2, Pad::none())?;
        let x = bqc(b, "Conv2d_2a_3x3", x, 32, (3, 3), 1, Pad::none())?;
        let x = bqc(b, "Conv2d_2b_3x3", x, 64, (3, 3), 1, Pad::all(1))?;
        let x = b.max_pool(x, PoolOpts::new(3, 2, 0))?;
        let x = bqc(b, "Conv2d_3b_1x1", x, 80, (1, 1), 1, Pad::none())?;
        let x = bqc(b, "Conv2d_4a_3x3", x, 192, (3, 3), 1, Pad::none())?;
        let x = b.max_pool(x, PoolOpts::new(3, 2, 0))?;
        let x = inception_a(b, "Mixed_5b", x, 32)?;
        let x = inception_a(b, "Mixed_5c", x, 64)?;
        let x = inception_a(b, "Mixed_5d", x, 64)?;
        let x = inception_b(b, "Mixed_6a", x)?;
        let x = inception_c(b, "Mixed_6b", x, 128)?;
        let x = inception_c(b, "Mixed_6c", x, 160)?;
        let x = inception_c(b, "Mixed_6d", x, 160)?;
        let x = inception_c(b, "Mixed_6e", x, 192)?;
        let x = inception_d(b, "Mixed_7a", x)?;
        let x = inception_e(b, "Mixed_7b", x)?;
        let x = inception_e(b, "Mixed_7c", x)?;
        let x = b.batch_norm("Mixed_7c_bn", x)?;
        let x = b.relu(x)?;
        b.expect_spatial(x, (8, 8), "avgpool")?;
        let x = b.avg_pool(x, PoolOpts::new(8, 8, 0))?;
        let y = b.linear("fc", x)?;
        b.output(y)
    }
}

fn build(t: &Table) -> Result<Box<dyn Backbone>> {
    Params::new(ID, t).deny_unknown(&[])?;
    Ok(Box::new(InceptionV3))
}

edmips_core::register_backbone! {
    id: ID,
    summary: "EdMIPS Inception-V3 (299x299; BN before quantized convs, pools count padding; 93 searchable layers)",
    build: build,
}
