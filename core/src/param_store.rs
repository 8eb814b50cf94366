//! [`ParamStore`]: every trainable tensor and buffer of a network, by name, in declaration
//! order, with the optimiser group it belongs to.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which optimiser (if any) updates a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamGroup {
    /// Network weights (conv, BN affine, fc): the `lr` optimiser.
    Weight,
    /// Architecture logits (the reference's `alpha_*`): the `lra` optimiser.
    Arch,
    /// Learnable quantizer parameters (LSQ steps, PACT clips): the `quant` optimiser, with its
    /// own learning rate and weight decay (`train.quant_lr`, `train.quant_weight_decay`).
    Quant,
    /// Non-trainable state saved with the model (BN running statistics).
    Buffer,
}

/// One named tensor.
#[derive(Debug, Clone)]
pub struct Param {
    /// Dotted name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// The tensor (a `Var`, so buffers can be updated in place too).
    pub var: Var,
    /// Its group.
    pub group: ParamGroup,
}

/// Named tensors in declaration order.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `t` under `name`; a second tensor with the same name is an error.
    pub fn add(&mut self, name: impl Into<String>, t: Tensor, group: ParamGroup) -> Result<Var> {
        let name = name.into();
        if self.index.contains_key(&name) {
            return Err(Error::msg(format!("duplicate parameter name `{name}`")));
        }
        let var = Var::from_tensor(&t)?;
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param { name, var: var.clone(), group });
        Ok(var)
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    /// All parameters in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// The parameters of one group, in declaration order.
    pub fn group(&self, g: ParamGroup) -> Vec<&Param> {
        self.params.iter().filter(|p| p.group == g).collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar values in the trainable groups.
    pub fn trainable_count(&self) -> usize {
        self.params.iter().filter(|p| p.group != ParamGroup::Buffer).map(|p| p.var.elem_count()).sum()
    }
}
