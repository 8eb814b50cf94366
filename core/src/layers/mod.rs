//! Layers built from the plugins: the searchable [`MixedConv`] (decisions.md R4), the fixed-bit
//! [`FixedConv`] (decisions.md R3) and the plain full-precision [`Conv`], and the learnable
//! quantizer parameters a quantized layer owns ([`LearnedState`]).
//!
//! Each layer checks its input against the [`LayerInfo`] the builder
//! inferred, so a wrong input size is an error naming the layer, not a silent mismatch.

mod conv;
mod fixed_conv;
mod learned;
mod mixed_conv;

pub use conv::Conv;
pub use fixed_conv::FixedConv;
pub use learned::LearnedState;
pub use mixed_conv::{MixedConv, MixedOutput};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::layer_info::LayerInfo;

/// Fails unless `x` is `[N, C_in, H_in, W_in]` for `info`.
pub(crate) fn check_input(info: &LayerInfo, x: &Tensor) -> Result<()> {
    let d = x.dims();
    let ok = d.len() == 4 && d[1] == info.in_channels && (d[2], d[3]) == info.input_hw;
    if ok {
        Ok(())
    } else {
        Err(Error::Shape {
            context: format!("layer {} input", info.name),
            expected: format!("[N, {}, {}, {}]", info.in_channels, info.input_hw.0, info.input_hw.1),
            found: format!("{d:?}"),
        })
    }
}
