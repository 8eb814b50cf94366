//! [`LearnedState`]: the learnable parameters one quantizer owns in one layer for one operand
//! (LSQ's steps, PACT's clips), one set per candidate bit width, and their data-dependent
//! initialisation.
//!
//! The parameters live in the network's [`ParamStore`] (group [`ParamGroup::Quant`]) under
//! `<layer>.<act_quant|weight_quant>.<name>.b<bits>`, so checkpoints, optimisers and reports
//! see them like every other tensor. When the quantizer initialises any of them from data,
//! the state also owns a buffer `<layer>.<act_quant|weight_quant>.initialized` (0, then 1
//! after the first batch): the buffer is the truth (it is checkpointed, so a resumed run does
//! not initialise again); a host-side flag caches it, so the device is read once per layer,
//! not once per step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::param_store::{ParamGroup, ParamStore};
use crate::traits::quantizer::{learned_param_name, operand_prefix};
use crate::traits::{Operand, Quantizer};

/// The learnable parameters of one layer's quantizer for one operand.
#[derive(Debug, Clone, Default)]
pub struct LearnedState {
    /// For each candidate bit width (in candidate order): its parameters in declared order,
    /// with their full names.
    pub params: Vec<Vec<(String, Var)>>,
    /// Which parameters of each candidate are initialised from data.
    data_init: Vec<Vec<bool>>,
    /// The `initialized` buffer (present when some parameter is initialised from data).
    pub initialized: Option<Var>,
    /// Host cache of `initialized == 1`.
    done: Arc<AtomicBool>,
}

impl LearnedState {
    /// Declares `q`'s parameters for `operand` at each of `bits` in `store`, named after the
    /// layer `layer`. A parameter-free quantizer gets an empty state (nothing is added).
    pub fn declare(
        store: &mut ParamStore,
        layer: &str,
        q: &dyn Quantizer,
        operand: Operand,
        bits: &[u32],
        device: &Device,
    ) -> Result<Self> {
        let mut params = Vec::with_capacity(bits.len());
        let mut data_init = Vec::with_capacity(bits.len());
        for &b in bits {
            let decl = q.params(operand, b);
            let mut set = Vec::with_capacity(decl.len());
            for p in &decl {
                if p.name.is_empty() || p.name.contains(['.', ' ']) {
                    return Err(Error::msg(format!(
                        "quantizer `{}` declares a parameter named `{}`: a name must be non-empty, without dots or spaces",
                        q.id(),
                        p.name
                    )));
                }
                let name = format!("{layer}.{}", learned_param_name(operand, &p.name, b));
                let t = Tensor::full(p.init, p.shape.as_slice(), device)?;
                set.push((name.clone(), store.add(name, t, ParamGroup::Quant)?));
            }
            data_init.push(decl.iter().map(|p| p.data_init).collect::<Vec<_>>());
            params.push(set);
        }
        let initialized = if data_init.iter().flatten().any(|&d| d) {
            let name = format!("{layer}.{}.initialized", operand_prefix(operand));
            Some(store.add(name, Tensor::zeros(1, DType::F32, device)?, ParamGroup::Buffer)?)
        } else {
            None
        };
        let done = Arc::new(AtomicBool::new(initialized.is_none()));
        Ok(LearnedState { params, data_init, initialized, done })
    }

    /// Whether the quantizer owns no parameters here.
    pub fn is_empty(&self) -> bool {
        self.params.iter().all(Vec::is_empty)
    }

    /// The parameters as tensors, per candidate (what [`Quantizer::mix`] takes); empty when
    /// there are none.
    pub fn tensors(&self) -> Vec<Vec<Tensor>> {
        if self.is_empty() {
            return Vec::new();
        }
        self.params.iter().map(|set| set.iter().map(|(_, v)| v.as_tensor().clone()).collect()).collect()
    }

    /// The parameters of candidate `i` as tensors (what [`Quantizer::quantize`] takes).
    pub fn tensors_of(&self, i: usize) -> Vec<Tensor> {
        self.params.get(i).map(|set| set.iter().map(|(_, v)| v.as_tensor().clone()).collect()).unwrap_or_default()
    }

    /// Forgets the host cache of the `initialized` buffer (after the buffer was overwritten,
    /// e.g. by loading a checkpoint), so the next [`ensure_initialized`](Self::ensure_initialized)
    /// reads it again.
    pub fn reset_cache(&self) {
        self.done.store(self.initialized.is_none(), Ordering::SeqCst);
    }

    /// Initialises the data-initialised parameters from `x` (the layer's first input, or its
    /// weight) unless that already happened (in this process or in the run a checkpoint came
    /// from). Reads the device only until the layer is initialised.
    pub fn ensure_initialized(&self, q: &dyn Quantizer, x: &Tensor, operand: Operand, bits: &[u32]) -> Result<()> {
        if self.done.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(flag) = &self.initialized else { return Ok(()) };
        if flag.as_tensor().flatten_all()?.to_vec1::<f32>()?.first().copied().unwrap_or(0.0) != 0.0 {
            self.done.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let x = x.detach();
        for (i, &b) in bits.iter().enumerate() {
            let (set, init) = (&self.params[i], &self.data_init[i]);
            if !init.iter().any(|&d| d) {
                continue;
            }
            let values = q.init_from_data(&x, operand, b)?;
            if values.len() != set.len() {
                return Err(Error::msg(format!(
                    "quantizer `{}`: init_from_data({operand}, {b} bits) returned {} tensors for {} declared parameters",
                    q.id(),
                    values.len(),
                    set.len()
                )));
            }
            for (((name, var), v), &d) in set.iter().zip(values).zip(init) {
                if !d {
                    continue;
                }
                let v = v.detach().to_dtype(DType::F32)?.reshape(var.shape())?;
                var.set(&v).map_err(|e| Error::msg(format!("initialising `{name}` from data: {e}")))?;
            }
        }
        flag.set(&Tensor::ones(1, DType::F32, flag.device())?)?;
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }
}
