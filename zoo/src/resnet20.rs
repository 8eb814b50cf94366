//! CIFAR ResNet-20 in the EdMIPS style.
//!
//! He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (§4.2, the CIFAR-10
//! networks with n = 3), with the quantization layout of Cai & Vasconcelos, "Rethinking
//! Differentiable Search for Mixed-Precision Neural Networks", CVPR 2020:
//!
//! * stem: full-precision `conv1` 3×3 (→ 16 channels, stride 1, pad 1) → `bn1`, no ReLU (as
//!   the EdMIPS ImageNet ResNets);
//! * stages `layer1..3` of three EdMIPS basic blocks ([`blocks`](crate::blocks)) with 16, 32
//!   and 64 planes, strides 1, 2, 2: BN before every searchable conv, HWGQ in front of the conv
//!   as the nonlinearity, a searchable 1×1 conv + BN shortcut (`downsample.0/1`) where the
//!   shape changes (option B of He et al.);
//! * head (a choice of ours, pre-activation style since the blocks end in a BN and an
//!   addition): `head_bn` → ReLU → global average pool → `fc` (full precision, with bias).
//!
//! 20 searchable layers (18 block convs and 2 downsamples). Convolutions use He fan-out init.
//!
//! Parameters: `channels` (1 or 3, default 3) and `size` (default 32). With `channels = 1` the
//! input is grayscale with Fashion-MNIST statistics (mean 0.2860, std 0.3530), e.g.
//! `{ id = "resnet20", channels = 1, size = 28 }` for 28×28 Fashion-MNIST.

use edmips_core::graph::{InitScheme, NetBuilder, Pad};
use edmips_core::traits::backbone::InputSpec;
use edmips_core::{parse_params, Backbone, Error, Result, Table};

use crate::blocks::{stage, Block};

/// The registry id.
pub const ID: &str = "resnet20";

/// Fashion-MNIST mean.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Fashion-MNIST std.
pub const FASHION_MNIST_STD: f32 = 0.3530;

edmips_core::plugin_params! {
    /// CIFAR ResNet-20; also its typed parameters.
    pub struct ResNet20 {
        /// Input channels: 3 (CIFAR-10) or 1 (Fashion-MNIST).
        channels: usize = 3,
        /// Input side in pixels (at least 8).
        size: usize = 32,
    }
}

impl ResNet20 {
    /// A ResNet-20 for `channels` (1 or 3) input channels of `size`×`size`.
    pub fn new(channels: usize, size: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::config(ID, "channels", format!("must be 1 or 3, found {channels}")));
        }
        if size < 8 {
            return Err(Error::config(ID, "size", format!("must be at least 8, found {size}")));
        }
        Ok(ResNet20 { channels, size })
    }
}

impl Backbone for ResNet20 {
    fn id(&self) -> &str {
        ID
    }

    fn input(&self) -> InputSpec {
        if self.channels == 1 {
            InputSpec {
                channels: 1,
                size: self.size,
                resize: None,
                mean: vec![FASHION_MNIST_MEAN],
                std: vec![FASHION_MNIST_STD],
                random_resized_crop: false,
            }
        } else {
            InputSpec::cifar(self.size)
        }
    }

    fn build(&self, b: &mut NetBuilder) -> Result<()> {
        b.set_init(InitScheme::HeFanOut);
        let x = b.input();
        let x = b.conv("conv1", x, 16, (3, 3), 1, Pad::all(1))?;
        let mut x = b.batch_norm("bn1", x)?;
        for (i, planes) in [16usize, 32, 64].into_iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            x = stage(b, Block::Basic, &format!("layer{}", i + 1), x, planes, 3, stride)?;
        }
        let x = b.batch_norm("head_bn", x)?;
        let x = b.relu(x)?;
        let x = b.global_avg_pool(x)?;
        let y = b.linear("fc", x)?;
        b.output(y)
    }
}

fn build(t: &Table) -> Result<Box<dyn Backbone>> {
    let p: ResNet20 = parse_params(ID, t)?;
    Ok(Box::new(ResNet20::new(p.channels, p.size)?))
}

edmips_core::register_backbone! {
    id: ID,
    summary: "CIFAR ResNet-20 in EdMIPS style (3 stages x 3 basic blocks; 20 searchable layers)",
    params: ResNet20,
    build: build,
}
