//! A plain full-precision convolution (the networks' first conv).

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::ops::conv::conv2d;

/// `y = conv(x, W)`, no bias, no quantization.
#[derive(Debug, Clone)]
pub struct Conv {
    /// The weight (OIHW).
    pub weight: Var,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding (top, bottom, left, right).
    pub padding: [usize; 4],
}

impl Conv {
    /// Forward pass.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, self.weight.as_tensor(), self.stride, self.padding)
    }
}
