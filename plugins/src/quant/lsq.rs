//! LSQ, learned step size quantization (Esser, McKinstry, Bablani, Appuswamy, Modha, "Learned
//! Step Size Quantization", ICLR 2020).
//!
//! Each layer learns a step `s` per operand and per candidate bit width
//! (`<layer>.act_quant.step.b<bits>`, `<layer>.weight_quant.step.b<bits>`):
//!
//! * forward: `v̂ = round(clip(v/s, -Q_N, Q_P)) · s`, round half to even; weights are signed
//!   (`Q_N = 2^(b-1)`, `Q_P = 2^(b-1) - 1`), activations unsigned (`Q_N = 0`, `Q_P = 2^b - 1`, so
//!   the clip is also the ReLU of the quantizer's input);
//! * gradients (the paper's eq. 3 and straight-through rule): `∂v̂/∂v = 1` inside
//!   `-Q_N < v/s < Q_P`, 0 outside; `∂v̂/∂s = round(v/s) - v/s` inside, `-Q_N` below, `Q_P`
//!   above; the step's gradient is scaled by `g = 1/sqrt(N · Q_P)`, `N` the number of weights
//!   of the layer, or of features of one sample for activations (`C·H·W` of the input);
//! * initialisation (the paper's): `s = 2·mean(|v|)/sqrt(Q_P)` from the weights, and from the
//!   first batch for activations (over the quantizer's input, before its clip).
//!
//! **1-bit weights** (EdMIPS searches `w1`): signed LSQ has no 1-bit form (`Q_P = 0`), so edmips
//! uses the binary levels `±s`: `v̂ = s · sign(clip(v/s, -1, 1))` (sign of 0 is +1), the same
//! rules with `round` replaced by `sign` (`∂v̂/∂s = sign(v) - v/s` inside, `±1` outside,
//! `g = 1/sqrt(N)`), initialised to `mean(|v|)` (the L1-optimal binary scale). 32 bits is
//! the full-precision form: ReLU for activations, no quantization for weights.
//!
//! LSQ has no fused kernel: it is composed from tensor ops (any device, autograd for the
//! step), so its mixture is the composed default.

use edmips_core::candle::{DType, Tensor};
use edmips_core::ops::round::{grad_scale, round_ste};
use edmips_core::{
    Error, Operand, Params, Precision, QuantExport, QuantParam, Quantizer, Result, Rounding, Table, UniformQuant,
};

use super::unsupported;

/// The registry id.
pub const ID: &str = "lsq";

/// The name of the learned step.
pub const STEP: &str = "step";

/// The LSQ quantizer (weights and activations, 1 to 8 bits, and 32 for full precision).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lsq;

/// How one (operand, bits) pair quantizes: integer range, or the binary weight levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Levels {
    /// `round(clip(v/s, -q_n, q_p))`.
    Uniform {
        /// `Q_N`.
        q_n: f64,
        /// `Q_P`.
        q_p: f64,
    },
    /// `sign(clip(v/s, -1, 1))`: 1-bit weights.
    Binary,
}

impl Levels {
    /// The levels of `operand` at `bits` (1..=8).
    pub fn of(operand: Operand, bits: u32) -> Levels {
        let b = bits as i32;
        match operand {
            Operand::Weight if bits == 1 => Levels::Binary,
            Operand::Weight => Levels::Uniform { q_n: 2f64.powi(b - 1), q_p: 2f64.powi(b - 1) - 1.0 },
            Operand::Activation => Levels::Uniform { q_n: 0.0, q_p: 2f64.powi(b) - 1.0 },
        }
    }

    /// `Q_P` (1 for binary weights), the `Q_P` of the gradient scale and the initialisation.
    pub fn q_p(self) -> f64 {
        match self {
            Levels::Uniform { q_p, .. } => q_p,
            Levels::Binary => 1.0,
        }
    }
}

impl Lsq {
    /// `N` of the gradient scale: every weight, or the features of one sample.
    fn count(x: &Tensor, operand: Operand) -> usize {
        match operand {
            Operand::Weight => x.elem_count(),
            Operand::Activation => x.elem_count() / x.dims().first().copied().unwrap_or(1).max(1),
        }
    }

    /// The gradient scale `1/sqrt(N · Q_P)` of `x` at `bits`.
    pub fn grad_scale_of(x: &Tensor, operand: Operand, bits: u32) -> f64 {
        1.0 / (Self::count(x, operand) as f64 * Levels::of(operand, bits).q_p()).sqrt()
    }
}

impl Quantizer for Lsq {
    fn id(&self) -> &str {
        ID
    }

    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        if (1..=8).contains(&bits) || Precision::is_full(bits) {
            Ok(())
        } else {
            Err(unsupported(ID, operand, bits, "1 to 8 bits (weights and activations), or 32 (full precision)"))
        }
    }

    fn params(&self, _operand: Operand, bits: u32) -> Vec<QuantParam> {
        if Precision::is_full(bits) {
            Vec::new()
        } else {
            vec![QuantParam::scalar(STEP, 1.0, true)]
        }
    }

    fn init_from_data(&self, x: &Tensor, operand: Operand, bits: u32) -> Result<Vec<Tensor>> {
        self.check(operand, bits)?;
        let mean_abs = x.to_dtype(DType::F32)?.abs()?.flatten_all()?.mean_keepdim(0)?;
        let factor = match Levels::of(operand, bits) {
            Levels::Binary => 1.0,
            l => 2.0 / l.q_p().sqrt(),
        };
        // A zero input (a dead layer) would give a zero step: keep it positive.
        Ok(vec![mean_abs.affine(factor, 0.0)?.maximum(1e-8f32)?])
    }

    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        if Precision::is_full(bits) {
            return Ok(match operand {
                Operand::Activation => x.relu()?,
                Operand::Weight => x.clone(),
            });
        }
        let [step] = learned else {
            return Err(Error::msg(format!(
                "lsq ({operand}, {bits} bits): expected its learned step, got {} tensors (build the layer through the network)",
                learned.len()
            )));
        };
        let x = x.to_dtype(DType::F32)?;
        let s = grad_scale(step, Self::grad_scale_of(&x, operand, bits))?;
        let v = x.broadcast_div(&s)?;
        let q = match Levels::of(operand, bits) {
            Levels::Uniform { q_n, q_p } => round_ste(&v.clamp(-q_n as f32, q_p as f32)?)?,
            Levels::Binary => {
                let c = v.clamp(-1f32, 1f32)?;
                let sign = c.ge(0f32)?.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
                c.add(&sign.sub(&c.detach())?.detach())?
            }
        };
        Ok(q.broadcast_mul(&s)?)
    }

    /// The learned step as the scale: activations unsigned `[0, 2^b - 1]`, weights signed
    /// `[-2^(b-1), 2^(b-1) - 1]`, zero point 0, round half to even (the same f32 operations as
    /// [`quantize`](Quantizer::quantize): `x/s`, clip, round, `·s`); 1-bit weights `±s` as the
    /// unsigned 1-bit grid with scale `2s` and zero point 1/2; 32 bits ReLU or identity.
    fn export_form(
        &self,
        operand: Operand,
        bits: u32,
        _x: Option<&Tensor>,
        learned: &[Tensor],
    ) -> Result<Option<QuantExport>> {
        self.check(operand, bits)?;
        if Precision::is_full(bits) {
            return Ok(Some(match operand {
                Operand::Activation => QuantExport::Relu,
                Operand::Weight => QuantExport::Identity,
            }));
        }
        let [step] = learned else {
            return Err(Error::msg(format!(
                "lsq export ({operand}, {bits} bits): expected its learned step, got {} tensors",
                learned.len()
            )));
        };
        let s = step.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let [s] = s.as_slice() else {
            return Err(Error::msg(format!("lsq export: the step must be a scalar, found {} values", s.len())));
        };
        let uniform = |scale: f32, zero_point: f32, signed: bool| {
            QuantExport::Uniform(UniformQuant {
                scale,
                zero_point,
                bits,
                signed,
                narrow: false,
                rounding: Rounding::HalfEven,
            })
        };
        Ok(Some(match Levels::of(operand, bits) {
            Levels::Binary => uniform(2.0 * s, 0.5, false),
            _ => uniform(*s, 0.0, operand == Operand::Weight),
        }))
    }
}

fn build(params: &Table) -> Result<Box<dyn Quantizer>> {
    Params::new(ID, params).deny_unknown(&[])?;
    Ok(Box::new(Lsq))
}

edmips_core::register_quantizer! {
    id: ID,
    summary: "LSQ (Esser et al. 2020): learned step per layer and bit width, signed weights / unsigned activations, 1-8 bits",
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};

    /// The paper's forward and gradients in f64: `(v̂, ∂L/∂v, ∂L/∂s)` for upstream `g`, with the
    /// step gradient scaled by `scale`.
    fn reference(v: &[f64], g: &[f64], s: f64, levels: Levels, scale: f64) -> (Vec<f64>, Vec<f64>, f64) {
        let (mut y, mut gv, mut gs) = (Vec::new(), Vec::new(), 0.0);
        for (&x, &u) in v.iter().zip(g) {
            let r = x / s;
            let (q, inside, ds) = match levels {
                Levels::Uniform { q_n, q_p } => {
                    if r <= -q_n {
                        (-q_n, false, -q_n)
                    } else if r >= q_p {
                        (q_p, false, q_p)
                    } else {
                        (r.round_ties_even(), true, r.round_ties_even() - r)
                    }
                }
                Levels::Binary => {
                    let sg = if r >= 0.0 { 1.0 } else { -1.0 };
                    if r.abs() >= 1.0 {
                        (sg, false, sg)
                    } else {
                        (sg, true, sg - r)
                    }
                }
            };
            y.push(q * s);
            gv.push(if inside { u } else { 0.0 });
            gs += u * ds * scale;
        }
        (y, gv, gs)
    }

    fn check(operand: Operand, bits: u32, shape: &[usize], s: f32) {
        let n: usize = shape.iter().product();
        // Values away from the rounding ties and clip edges, both signs, inside and outside.
        let xv: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.731 + 0.1).sin() * 1.7 + 0.013).collect();
        let gu: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).cos()).collect();
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), shape, &dev).unwrap()).unwrap();
        let step = Var::new(&[s], &dev).unwrap();
        let y = Lsq.quantize(x.as_tensor(), operand, bits, &[step.as_tensor().clone()]).unwrap();
        let gt = Tensor::from_vec(gu.clone(), shape, &dev).unwrap();
        let grads = y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
        let levels = Levels::of(operand, bits);
        let scale = Lsq::grad_scale_of(x.as_tensor(), operand, bits);
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let (want_y, want_gv, want_gs) = reference(&f64s(&xv), &f64s(&gu), s as f64, levels, scale);
        let got_y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got_gv = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got_gs = grads.get(step.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        for i in 0..n {
            assert!(
                (got_y[i] as f64 - want_y[i]).abs() < 1e-5,
                "{operand} {bits}b y[{i}]: {} vs {}",
                got_y[i],
                want_y[i]
            );
            // (g / s) · s in f32: within an ulp or two of g inside, exactly 0 outside.
            assert!(
                (got_gv[i] as f64 - want_gv[i]).abs() <= 1e-6 * want_gv[i].abs(),
                "{operand} {bits}b dv[{i}]: {} vs {}",
                got_gv[i],
                want_gv[i]
            );
        }
        assert!((got_gs - want_gs).abs() < 1e-5 * (1.0 + want_gs.abs()), "{operand} {bits}b ds: {got_gs} vs {want_gs}");
        let mut lv: Vec<i64> = got_y.iter().map(|v| (*v as f64 / s as f64).round() as i64).collect();
        lv.sort();
        lv.dedup();
        assert!(lv.len() <= 1 << bits, "{operand} {bits}b: {} levels", lv.len());
    }

    #[test]
    fn forward_and_gradients_match_the_paper_in_f64() {
        for bits in [2, 3, 4, 8] {
            check(Operand::Weight, bits, &[4, 3, 3, 3], 0.37);
            check(Operand::Activation, bits, &[2, 3, 4, 4], 0.29);
        }
        check(Operand::Weight, 1, &[4, 3, 3, 3], 0.9);
        check(Operand::Activation, 1, &[2, 3, 4, 4], 0.8);
    }

    #[test]
    fn the_export_form_reproduces_every_output_bit_for_bit() {
        let dev = Device::Cpu;
        let xv: Vec<f32> = (0..4000).map(|i| ((i as f32) * 0.0173).sin() * 3.1 + (i % 7) as f32 * 0.125).collect();
        for (operand, bits, s) in [
            (Operand::Activation, 2, 0.37f32),
            (Operand::Activation, 4, 0.11),
            (Operand::Weight, 1, 0.8),
            (Operand::Weight, 3, 0.29),
        ] {
            let step = Tensor::new(&[s], &dev).unwrap();
            let x = Tensor::from_vec(xv.clone(), (1, 4000), &dev).unwrap();
            let y = Lsq.quantize(&x, operand, bits, std::slice::from_ref(&step)).unwrap().flatten_all().unwrap();
            let Some(QuantExport::Uniform(u)) = Lsq.export_form(operand, bits, None, &[step]).unwrap() else {
                panic!("lsq has a uniform export form")
            };
            let (lo, hi) = match (u.signed, u.bits) {
                (true, b) => (-(2f32.powi(b as i32 - 1)), 2f32.powi(b as i32 - 1) - 1.0),
                (false, b) => (0.0, 2f32.powi(b as i32) - 1.0),
            };
            for (&xe, &ye) in xv.iter().zip(&y.to_vec1::<f32>().unwrap()) {
                let q = u.rounding.apply((xe / u.scale + u.zero_point).clamp(lo, hi));
                let want = (q - u.zero_point) * u.scale;
                if operand == Operand::Activation {
                    assert_eq!(want.to_bits(), ye.to_bits(), "{operand} {bits}b at {xe}: {want} vs {ye}");
                } else {
                    // Weights: the quantizer's output lies on the grid (the exporter stores it).
                    let on_grid = ye / u.scale + u.zero_point;
                    assert!((on_grid - on_grid.round()).abs() < 1e-5 && (lo..=hi).contains(&on_grid.round()), "{ye}");
                }
            }
        }
        assert_eq!(Lsq.export_form(Operand::Activation, 32, None, &[]).unwrap(), Some(QuantExport::Relu));
    }

    #[test]
    fn initialisation_is_the_papers_and_full_precision_is_relu() {
        let x = Tensor::new(&[[-1.0f32, 2.0], [0.5, -0.5]], &Device::Cpu).unwrap();
        let s = Lsq.init_from_data(&x, Operand::Activation, 2).unwrap()[0].to_vec1::<f32>().unwrap()[0];
        assert!((s as f64 - 2.0 * 1.0 / 3f64.sqrt()).abs() < 1e-6, "{s}");
        let s = Lsq.init_from_data(&x, Operand::Weight, 1).unwrap()[0].to_vec1::<f32>().unwrap()[0];
        assert!((s - 1.0).abs() < 1e-6, "{s}");
        let y = Lsq.quantize(&x, Operand::Activation, 32, &[]).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![0.0, 2.0], vec![0.5, 0.0]]);
        assert!(Lsq.params(Operand::Weight, 32).is_empty());
        assert_eq!(Lsq.params(Operand::Activation, 2)[0].name, STEP);
        let e = Lsq.quantize(&x, Operand::Activation, 2, &[]).unwrap_err().to_string();
        assert!(e.contains("learned step"), "{e}");
        assert!(Lsq.check(Operand::Weight, 9).is_err());
    }
}
