//! SGD with momentum and weight decay, with PyTorch's semantics (no dampening, no Nesterov):
//! `d = g + wd·p`; `buf = d` on the first step, `μ·buf + d` afterwards; `p ← p - lr·buf`.
//! A parameter without a gradient is skipped, as PyTorch skips `grad = None`.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use edmips_core::error::Result;

/// One SGD optimiser over a group of named parameters.
#[derive(Debug)]
pub struct Sgd {
    /// Learning rate (set per epoch by the schedule).
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    params: Vec<(String, Var)>,
    buffers: HashMap<String, Tensor>,
}

impl Sgd {
    /// An optimiser over `params`.
    pub fn new(params: Vec<(String, Var)>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Sgd { lr, momentum, weight_decay, params, buffers: HashMap::new() }
    }

    /// One update from `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            let d = if self.weight_decay != 0.0 {
                g.add(&p.as_tensor().affine(self.weight_decay, 0.0)?)?
            } else {
                g.clone()
            };
            let buf = match self.buffers.get(name) {
                Some(b) if self.momentum != 0.0 => b.affine(self.momentum, 0.0)?.add(&d)?,
                _ => d,
            };
            p.set(&p.as_tensor().add(&buf.affine(-self.lr, 0.0)?)?)?;
            if self.momentum != 0.0 {
                self.buffers.insert(name.clone(), buf.detach());
            }
        }
        Ok(())
    }

    /// The momentum buffers by parameter name (empty before the first step).
    pub fn buffers(&self) -> &HashMap<String, Tensor> {
        &self.buffers
    }

    /// Restores momentum buffers saved by [`buffers`](Self::buffers).
    pub fn set_buffers(&mut self, buffers: HashMap<String, Tensor>) {
        self.buffers = buffers;
    }

    /// The parameters this optimiser updates.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn two_steps_follow_pytorch_sgd() {
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.9, 0.01);
        // loss = sum(p^2): g = 2p.
        let (mut pv, mut buf) = ([1.0f64, -2.0], [0.0f64; 2]);
        for step in 0..2 {
            let grads = p.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
            opt.step(&grads).unwrap();
            for i in 0..2 {
                let d = 2.0 * pv[i] + 0.01 * pv[i];
                buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
                pv[i] -= 0.1 * buf[i];
            }
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - pv[i]).abs() < 1e-6, "{got:?} vs {pv:?}");
        }
    }
}
