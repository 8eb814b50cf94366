//! The searchable convolution of EdMIPS (`MixActivConv2d` with a shared weight, decisions.md R4).

use std::sync::Arc;

use candle_core::{Tensor, Var};

use super::learned::LearnedState;
use crate::bits::check_candidates;
use crate::error::Result;
use crate::layer_info::LayerInfo;
use crate::ops::batch_norm::BatchNormParams;
use crate::ops::conv::conv2d;
use crate::traits::{BitDistribution, Operand, Quantizer, RelaxContext, Relaxation};

/// A mixed-precision convolution: `y = conv(x̂, Ŵ)` with
/// `x̂ = Σ_i p_i · Q_{a_i}(x)`, `Ŵ = Σ_j q_j · Q_{w_j}(W)`, `p` and `q` the relaxation's weights
/// of the two logit vectors. Because convolution is bilinear this equals the mixture of all
/// `|abits|·|wbits|` branch convolutions at the cost of one (the paper's composite convolution).
#[derive(Debug, Clone)]
pub struct MixedConv {
    /// Static description (shapes, sizes).
    pub info: LayerInfo,
    /// The shared weight `W` (OIHW).
    pub weight: Var,
    /// Activation-bit logits (one per `abits` entry), the reference's `alpha_activ`.
    pub alpha_activ: Var,
    /// Weight-bit logits (one per `wbits` entry), the reference's `alpha_weight`.
    pub alpha_weight: Var,
    /// Activation-bit candidates.
    pub abits: Vec<u32>,
    /// Weight-bit candidates.
    pub wbits: Vec<u32>,
    /// Activation quantizer.
    pub act_quantizer: Arc<dyn Quantizer>,
    /// Weight quantizer.
    pub weight_quantizer: Arc<dyn Quantizer>,
    /// Relaxation turning logits into mixing weights.
    pub relaxation: Arc<dyn Relaxation>,
    /// The activation quantizer's learnable parameters, one set per `abits` entry.
    pub act_learned: LearnedState,
    /// The weight quantizer's learnable parameters, one set per `wbits` entry.
    pub weight_learned: LearnedState,
}

/// The output of a [`MixedConv`] forward pass, with the bit distributions it used (for the
/// complexity cost).
#[derive(Debug, Clone)]
pub struct MixedOutput {
    /// The convolution output.
    pub y: Tensor,
    /// Activation-bit distribution (`abits`, `p`).
    pub act: BitDistribution,
    /// Weight-bit distribution (`wbits`, `q`).
    pub weight: BitDistribution,
}

impl MixedConv {
    /// Checks every candidate against the quantizers, so a bad bit list fails at build time.
    pub fn validate(&self) -> Result<()> {
        check_candidates(&self.wbits, &self.abits, self.act_quantizer.as_ref(), self.weight_quantizer.as_ref())
    }

    /// The activation distribution for the current logits.
    pub fn act_distribution(&self, ctx: &RelaxContext) -> Result<BitDistribution> {
        Ok(BitDistribution {
            bits: self.abits.clone(),
            probs: self
                .relaxation
                .weights(self.alpha_activ.as_tensor(), &ctx.for_stream(2 * self.info.index as u64))?,
        })
    }

    /// The weight distribution for the current logits.
    pub fn weight_distribution(&self, ctx: &RelaxContext) -> Result<BitDistribution> {
        Ok(BitDistribution {
            bits: self.wbits.clone(),
            probs: self
                .relaxation
                .weights(self.alpha_weight.as_tensor(), &ctx.for_stream(2 * self.info.index as u64 + 1))?,
        })
    }

    /// The mixed activation `x̂` for input `x`.
    pub fn mixed_activation(&self, x: &Tensor, act: &BitDistribution) -> Result<Tensor> {
        let q = self.act_quantizer.as_ref();
        self.act_learned.ensure_initialized(q, x, Operand::Activation, &act.bits)?;
        q.mix(x, Operand::Activation, &act.bits, &act.probs, &self.act_learned.tensors())
    }

    /// The mixed weight `Ŵ`.
    pub fn mixed_weight(&self, weight: &BitDistribution) -> Result<Tensor> {
        let (q, w) = (self.weight_quantizer.as_ref(), self.weight.as_tensor());
        self.weight_learned.ensure_initialized(q, w, Operand::Weight, &weight.bits)?;
        q.mix(w, Operand::Weight, &weight.bits, &weight.probs, &self.weight_learned.tensors())
    }

    /// Forward pass.
    pub fn forward(&self, x: &Tensor, ctx: &RelaxContext) -> Result<MixedOutput> {
        super::check_input(&self.info, x)?;
        let act = self.act_distribution(ctx)?;
        let weight = self.weight_distribution(ctx)?;
        let xh = self.mixed_activation(x, &act)?;
        let wh = self.mixed_weight(&weight)?;
        let y = conv2d(&xh, &wh, self.info.stride.0, self.info.padding)?;
        Ok(MixedOutput { y, act, weight })
    }

    /// [`forward`](Self::forward) of `batch_norm_train(x)` for the batch norm `bn` in front of
    /// this layer, the batch norm fused into the activation mixture
    /// ([`Quantizer::mix_batch_norm`]); `None`, with nothing computed, where the quantizer has
    /// no fused kernel for it or the layer has data-initialised quantizer parameters.
    pub fn forward_after_batch_norm(
        &self,
        x: &Tensor,
        bn: &BatchNormParams,
        bn_name: &str,
        ctx: &RelaxContext,
    ) -> Result<Option<MixedOutput>> {
        super::check_input(&self.info, x)?;
        if self.act_learned.initialized.is_some() {
            return Ok(None);
        }
        let act = self.act_distribution(ctx)?;
        let q = self.act_quantizer.as_ref();
        let learned = self.act_learned.tensors();
        let Some(xh) = q.mix_batch_norm(x, bn, bn_name, Operand::Activation, &act.bits, &act.probs, &learned)? else {
            return Ok(None);
        };
        let weight = self.weight_distribution(ctx)?;
        let wh = self.mixed_weight(&weight)?;
        let y = conv2d(&xh, &wh, self.info.stride.0, self.info.padding)?;
        Ok(Some(MixedOutput { y, act, weight }))
    }

    /// The current logits as host vectors `(alpha_activ, alpha_weight)`.
    pub fn logits(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.alpha_activ.as_tensor().to_vec1()?, self.alpha_weight.as_tensor().to_vec1()?))
    }

    /// The discrete pick `(wbit, abit)` of the relaxation (argmax, first index on ties).
    pub fn chosen_bits(&self) -> Result<(u32, u32)> {
        let (a, w) = self.logits()?;
        Ok((self.wbits[self.relaxation.pick(&w)], self.abits[self.relaxation.pick(&a)]))
    }
}
