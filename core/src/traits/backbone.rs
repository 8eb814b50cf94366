//! The [`Backbone`] trait: a network topology declared once through a [`NetBuilder`].
//!
//! A backbone never names a quantizer. It declares its searchable convolutions with
//! [`NetBuilder::quant_conv`]; the experiment decides whether each becomes a mixed (search),
//! fixed-bit (retrain) or full-precision convolution. One backbone file therefore serves
//! search, retrain and full precision (the reference needed one file per mode).
//!
//! The builder infers shapes as layers are declared, so per-layer sizes (BitOps) are known
//! without running the network, and the declaration order of `quant_conv` calls is the order of
//! every per-layer list (architecture files, reports).
//!
//! # Example
//!
//! ```
//! use edmips_core::graph::{NetBuilder, Pad, InitScheme};
//! use edmips_core::{Backbone, InputSpec, Result};
//!
//! /// conv -> BN -> quantized conv -> global pool -> fc.
//! #[derive(Debug)]
//! struct Small;
//! impl Backbone for Small {
//!     fn id(&self) -> &str { "small" }
//!     fn input(&self) -> InputSpec { InputSpec::cifar(32) }
//!     fn build(&self, b: &mut NetBuilder) -> Result<()> {
//!         b.set_init(InitScheme::HeFanOut);
//!         let x = b.input();
//!         let x = b.conv("conv1", x, 8, (3, 3), 1, Pad::same(3))?;
//!         let x = b.batch_norm("bn1", x)?;
//!         let x = b.quant_conv("conv2", x, 16, (3, 3), 2, Pad::same(3))?;
//!         let x = b.global_avg_pool(x)?;
//!         let y = b.linear("fc", x)?;
//!         b.output(y)
//!     }
//! }
//! let g = NetBuilder::declare(&Small, 10).unwrap();
//! assert_eq!(g.searchable_layers().len(), 1);
//! assert_eq!(g.searchable_layers()[0].input_hw, (32, 32));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph::NetBuilder;

/// What a backbone expects as input, and the data pipeline that feeds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Input channels (3 for RGB, 1 for grayscale).
    pub channels: usize,
    /// Input height and width.
    pub size: usize,
    /// Short side the validation images are resized to before the center crop; `None` for
    /// small-image configurations that use the image as it is.
    pub resize: Option<usize>,
    /// Per-channel normalisation mean.
    pub mean: Vec<f32>,
    /// Per-channel normalisation std.
    pub std: Vec<f32>,
    /// Train augmentation: `RandomResizedCrop` (ImageNet style) when true, else
    /// `RandomCrop(size, padding = size/8)` (CIFAR style). Both add a horizontal flip.
    pub random_resized_crop: bool,
}

/// ImageNet channel means (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel stds (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// CIFAR-10 channel means.
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 channel stds.
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

impl InputSpec {
    /// ImageNet-style input: RGB, `crop`×`crop`, validation resize to `resize` then center crop.
    pub fn imagenet(crop: usize, resize: usize) -> Self {
        InputSpec {
            channels: 3,
            size: crop,
            resize: Some(resize),
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            random_resized_crop: true,
        }
    }

    /// CIFAR-style input: RGB, `size`×`size`, random crop with padding and flip, no resize.
    pub fn cifar(size: usize) -> Self {
        InputSpec {
            channels: 3,
            size,
            resize: None,
            mean: CIFAR_MEAN.to_vec(),
            std: CIFAR_STD.to_vec(),
            random_resized_crop: false,
        }
    }
}

/// A backbone plugin. See the [module docs](self) for an example.
pub trait Backbone: Send + Sync + fmt::Debug {
    /// The registry id.
    fn id(&self) -> &str;

    /// The input this backbone expects.
    fn input(&self) -> InputSpec;

    /// Declares the network on `b` (whose input and class count are already set).
    fn build(&self, b: &mut NetBuilder) -> Result<()>;
}
