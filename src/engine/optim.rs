//! SGD with momentum and weight decay, with PyTorch's semantics (no dampening, no Nesterov):
//! `d = g + wd·p`; `buf = d` on the first step, `μ·buf + d` afterwards; `p ← p - lr·buf`.
//! A parameter without a gradient is skipped, as PyTorch skips `grad = None`.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;

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
    ///
    /// On the CPU, a parameter with a momentum buffer is updated in place in two passes
    /// (`sgd_in_place`); otherwise (the first step, other devices, no momentum) the update
    /// is composed from tensor ops. Both give the same bits.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_on(grads, true)
    }

    /// [`step`](Self::step), with the in-place CPU update allowed or not (the test of the
    /// in-place update compares the two).
    fn step_on(&mut self, grads: &GradStore, in_place: bool) -> Result<()> {
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            if in_place && self.momentum != 0.0 {
                if let Some(buf) = self.buffers.get(name) {
                    if sgd_in_place(p, g, buf, self.lr, self.momentum, self.weight_decay)? {
                        continue;
                    }
                }
            }
            let d = if self.weight_decay != 0.0 {
                g.add(&p.as_tensor().affine(self.weight_decay, 0.0)?)?
            } else {
                g.clone()
            };
            let buf = match self.buffers.get(name) {
                Some(b) if self.momentum != 0.0 => b.affine(self.momentum, 0.0)?.add(&d)?,
                // A buffer of its own (`d` may be the gradient itself), which later steps
                // may update in place.
                _ => d.copy()?,
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

/// The SGD update of one parameter on the CPU, in place: `buf ← (buf·μ + 0) + (g + (p·wd + 0))`
/// (the `+ 0` terms when `wd = 0` drop to `buf ← (buf·μ + 0) + g`), then
/// `p ← p + (buf·(−lr) + 0)`: the f32 operations of the composed update (candle's `affine` is
/// `v·mul + add`, its `add` one addition) in the same order, so the same bits, in two passes
/// instead of six allocating ones (11.7 M parameters in ResNet-18), each pass split over the
/// threads in blocks of [`UPDATE_CHUNK`] elements. Returns `false`, doing
/// nothing, where it does not apply (not the CPU, not f32, not contiguous).
fn sgd_in_place(p: &Var, g: &Tensor, buf: &Tensor, lr: f64, momentum: f64, weight_decay: f64) -> Result<bool> {
    let p = p.as_tensor();
    let plain = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if !(plain(p) && plain(g) && plain(buf)) || p.shape() != g.shape() || p.shape() != buf.shape() {
        return Ok(false);
    }
    buf.inplace_op3(g, p, &MomentumStep { momentum: momentum as f32, weight_decay: weight_decay as f32 })?;
    p.inplace_op2(buf, &ParamStep { neg_lr: -lr as f32 })?;
    Ok(true)
}

/// Elements per parallel task of the in-place update: each element's operations do not depend
/// on any other, so the split (over rayon's threads) changes nothing in the result; a tensor
/// below it is one task (most of ResNet-20's are).
const UPDATE_CHUNK: usize = 1 << 16;

/// `buf ← (buf·μ + 0) + d` with `d = g + (p·wd + 0)` (or `d = g` when `wd = 0`).
struct MomentumStep {
    momentum: f32,
    weight_decay: f32,
}

/// `p ← p + (buf·(−lr) + 0)`.
struct ParamStep {
    neg_lr: f32,
}

/// The contiguous f32 slice of a CPU storage.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("sgd: expected a contiguous f32 tensor"),
    }
}

/// The contiguous f32 slice of a mutable CPU storage.
fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("sgd: expected a contiguous f32 tensor"),
    }
}

impl InplaceOp3 for MomentumStep {
    fn name(&self) -> &'static str {
        "edmips-sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (buf, g, p) = (f32_slice_mut(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (m, wd) = (self.momentum, self.weight_decay);
        buf.par_chunks_mut(UPDATE_CHUNK).zip(g.par_chunks(UPDATE_CHUNK)).zip(p.par_chunks(UPDATE_CHUNK)).for_each(
            |((buf, g), p)| {
                for ((b, &gv), &pv) in buf.iter_mut().zip(g).zip(p) {
                    let d = if wd != 0.0 { gv + (pv * wd + 0.0) } else { gv };
                    *b = (*b * m + 0.0) + d;
                }
            },
        );
        Ok(())
    }
}

impl InplaceOp2 for ParamStep {
    fn name(&self) -> &'static str {
        "edmips-sgd-param"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (p, buf) = (f32_slice_mut(s1, l1)?, f32_slice(s2, l2)?);
        p.par_chunks_mut(UPDATE_CHUNK).zip(buf.par_chunks(UPDATE_CHUNK)).for_each(|(p, buf)| {
            for (pv, &b) in p.iter_mut().zip(buf) {
                *pv += b * self.neg_lr + 0.0;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place CPU update gives the bits of the composed one over several steps, with and
    /// without weight decay, including negative zeros and values that round differently, on a
    /// tensor of one parallel block and on one of several with a ragged last block.
    #[test]
    fn in_place_update_equals_the_composed_one_bitwise() {
        for (n, wd) in [(1003, 0.0), (1003, 1e-4), (1003, 0.01), (3 * UPDATE_CHUNK + 17, 1e-4)] {
            let init = edmips_core::init::det_fill(n, 21, 1.0);
            let (a, b) =
                (Var::new(init.as_slice(), &Device::Cpu).unwrap(), Var::new(init.as_slice(), &Device::Cpu).unwrap());
            let mut fused = Sgd::new(vec![("p".into(), a.clone())], 0.1, 0.9, wd);
            let mut composed = Sgd::new(vec![("p".into(), b.clone())], 0.1, 0.9, wd);
            for step in 0..4u64 {
                let gv = edmips_core::init::det_fill(n, 30 + step, 0.5);
                let gt = Tensor::new(gv.as_slice(), &Device::Cpu).unwrap();
                // loss = Σ p·g, so the gradient is g (the same tensor values for both).
                let ga = (a.as_tensor() * &gt).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (b.as_tensor() * &gt).unwrap().sum_all().unwrap().backward().unwrap();
                fused.step_on(&ga, true).unwrap();
                composed.step_on(&gb, false).unwrap();
                let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "wd {wd}, step {step}: parameters");
                assert_eq!(
                    bits(&fused.buffers()["p"]),
                    bits(&composed.buffers()["p"]),
                    "wd {wd}, step {step}: buffers"
                );
            }
            assert_ne!(a.as_tensor().to_vec1::<f32>().unwrap(), init, "the parameters moved");
        }
    }

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
