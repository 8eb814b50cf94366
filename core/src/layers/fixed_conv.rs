//! The fixed-precision convolution of retraining (`QuantActivConv2d`, decisions.md R3).

use std::sync::Arc;

use candle_core::{Tensor, Var};

use crate::bits::{check_layer_bits, Precision};
use crate::error::Result;
use crate::layer_info::LayerInfo;
use crate::ops::conv::conv2d;
use crate::traits::{Operand, Quantizer};

/// `y = conv(Q_abit(x), Q_wbit(W))`, no bias.
///
/// `abit = 32` asks the activation quantizer for its full-precision form (HWGQ: ReLU).
/// `wbit = 32` leaves the weight unquantized; the reference cannot do this (D7), edmips allows
/// it for full-precision baselines.
#[derive(Debug, Clone)]
pub struct FixedConv {
    /// Static description.
    pub info: LayerInfo,
    /// The weight (OIHW).
    pub weight: Var,
    /// Weight bits.
    pub wbit: u32,
    /// Activation bits.
    pub abit: u32,
    /// Activation quantizer.
    pub act_quantizer: Arc<dyn Quantizer>,
    /// Weight quantizer.
    pub weight_quantizer: Arc<dyn Quantizer>,
}

impl FixedConv {
    /// Checks the bits against the quantizers ([`check_layer_bits`]).
    pub fn validate(&self) -> Result<()> {
        check_layer_bits(self.wbit, self.abit, self.act_quantizer.as_ref(), self.weight_quantizer.as_ref())
    }

    /// Forward pass.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::check_input(&self.info, x)?;
        let xq = self.act_quantizer.quantize(x, Operand::Activation, self.abit)?;
        let w = self.weight.as_tensor();
        let wq = if Precision::is_full(self.wbit) {
            w.clone()
        } else {
            self.weight_quantizer.quantize(w, Operand::Weight, self.wbit)?
        };
        conv2d(&xq, &wq, self.info.stride.0, self.info.padding)
    }
}
