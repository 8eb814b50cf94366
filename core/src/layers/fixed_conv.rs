//! The fixed-precision convolution of retraining (`QuantActivConv2d`, decisions.md R3).

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};

use super::learned::LearnedState;
use crate::bits::{check_layer_bits, Precision};
use crate::error::Result;
use crate::layer_info::LayerInfo;
use crate::ops::batch_norm::BatchNormParams;
use crate::ops::consts::cached;
use crate::ops::conv::{conv2d, conv2d_on_grids};
use crate::ops::integer_conv::{self, Grid};
use crate::traits::{Operand, QuantExport, Quantizer};

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
    /// The activation quantizer's learnable parameters at `abit` (one set).
    pub act_learned: LearnedState,
    /// The weight quantizer's learnable parameters at `wbit` (one set; none at 32 bits).
    pub weight_learned: LearnedState,
}

impl FixedConv {
    /// Checks the bits against the quantizers ([`check_layer_bits`]).
    pub fn validate(&self) -> Result<()> {
        check_layer_bits(self.wbit, self.abit, self.act_quantizer.as_ref(), self.weight_quantizer.as_ref())
    }

    /// Forward pass.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::check_input(&self.info, x)?;
        let aq = self.act_quantizer.as_ref();
        self.act_learned.ensure_initialized(aq, x, Operand::Activation, &[self.abit])?;
        let xq = aq.quantize(x, Operand::Activation, self.abit, &self.act_learned.tensors_of(0))?;
        self.conv_quantized(&xq)
    }

    /// [`forward`](Self::forward) of `batch_norm_train(x)` for the batch norm `bn` in front of
    /// this layer, the batch norm fused into the activation quantizer
    /// ([`Quantizer::mix_batch_norm`] with one candidate at weight 1); `None`, with nothing
    /// computed, where the quantizer has no fused kernel for it or the layer has
    /// data-initialised quantizer parameters.
    pub fn forward_after_batch_norm(&self, x: &Tensor, bn: &BatchNormParams, bn_name: &str) -> Result<Option<Tensor>> {
        super::check_input(&self.info, x)?;
        if self.act_learned.initialized.is_some() {
            return Ok(None);
        }
        let one = cached(x.device(), "fixed_conv.one", &[], |d| Ok(Tensor::ones(1, DType::F32, d)?))?;
        let learned = vec![self.act_learned.tensors_of(0)];
        let aq = self.act_quantizer.as_ref();
        match aq.mix_batch_norm(x, bn, bn_name, Operand::Activation, &[self.abit], &one, &learned)? {
            Some(xq) => Ok(Some(self.conv_quantized(&xq)?)),
            None => Ok(None),
        }
    }

    /// The convolution of the quantized input `xq` with the quantized weight.
    fn conv_quantized(&self, xq: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let wq = if Precision::is_full(self.wbit) {
            w.clone()
        } else {
            let wqz = self.weight_quantizer.as_ref();
            self.weight_learned.ensure_initialized(wqz, w, Operand::Weight, &[self.wbit])?;
            wqz.quantize(w, Operand::Weight, self.wbit, &self.weight_learned.tensors_of(0))?
        };
        match self.grids(xq, w) {
            Some((gx, gw)) => conv2d_on_grids(xq, &wq, self.info.stride.0, self.info.padding, gx, gw),
            None => conv2d(xq, &wq, self.info.stride.0, self.info.padding),
        }
    }

    /// The integer grids of the quantized input and weight, from the two quantizers' export
    /// descriptions ([`Quantizer::export_form`]), where the integer forward can run (CPU with
    /// [`integer_conv::available`]) and both are uniform; `None` otherwise, and where a
    /// quantizer cannot describe itself (the f32 path is always valid).
    fn grids(&self, xq: &Tensor, w: &Tensor) -> Option<(Grid, Grid)> {
        if !xq.device().is_cpu() || !integer_conv::available() || Precision::is_full(self.wbit) {
            return None;
        }
        let grid = |form: Result<Option<QuantExport>>| match form {
            Ok(Some(QuantExport::Uniform(u))) => Grid::of(&u),
            _ => None,
        };
        let act = self.act_learned.tensors_of(0);
        let gx = grid(self.act_quantizer.export_form(Operand::Activation, self.abit, None, &act))?;
        let wl = self.weight_learned.tensors_of(0);
        grid(self.weight_quantizer.export_form(Operand::Weight, self.wbit, Some(w), &wl)).map(|gw| (gx, gw))
    }
}
