//! PACT, parameterized clipping activation (Choi, Wang, Venkataramani, Chuang, Srinivasan,
//! Gopalakrishnan, "PACT: Parameterized Clipping Activation for Quantized Neural Networks",
//! arXiv:1805.06085, 2018).
//!
//! Each layer learns a clip `α` per candidate activation bit width
//! (`<layer>.act_quant.alpha.b<bits>`):
//!
//! * forward: `y = clip(x, 0, α)`, then `y_q = round(y · (2^k - 1)/α) · α/(2^k - 1)`, round half
//!   to even;
//! * gradients (the paper's straight-through rule, eq. 3): `∂y_q/∂x = 1` for `0 < x < α`, 0
//!   otherwise; `∂y_q/∂α = 1` for `x > α`, 0 otherwise;
//! * the L2 term `λ_α · α²/2` of the paper is the weight decay of the `quant` optimiser group
//!   (`--wdq`, default `--wd`), which adds `λ_α · α` to α's gradient;
//! * `α` starts at `init` (10, the paper's value); 32 bits is the full-precision form (ReLU).
//!
//! PACT quantizes activations only (the paper pairs it with DoReFa weights). It has no fused
//! kernel: it is composed from tensor ops, so its mixture is the composed default.

use edmips_core::candle::{DType, Tensor};
use edmips_core::ops::round::round_ste;
use edmips_core::{parse_params, Error, Operand, Precision, QuantParam, Quantizer, Result, Table};

use super::unsupported;

/// The registry id.
pub const ID: &str = "pact";

/// The name of the learned clip.
pub const ALPHA: &str = "alpha";

edmips_core::plugin_params! {
    /// The PACT activation quantizer; also its typed parameters.
    pub struct Pact {
        /// Initial clip α of every layer and bit width.
        pub init: f64 = 10.0,
    }
}

impl Quantizer for Pact {
    fn id(&self) -> &str {
        ID
    }

    fn check(&self, operand: Operand, bits: u32) -> Result<()> {
        if operand == Operand::Activation && ((1..=8).contains(&bits) || Precision::is_full(bits)) {
            Ok(())
        } else {
            Err(unsupported(
                ID,
                operand,
                bits,
                "activations with 1 to 8 bits, or 32 (full precision: ReLU); pair it with a weight quantizer such as dorefa",
            ))
        }
    }

    fn params(&self, operand: Operand, bits: u32) -> Vec<QuantParam> {
        if operand == Operand::Activation && !Precision::is_full(bits) {
            vec![QuantParam::scalar(ALPHA, self.init as f32, false)]
        } else {
            Vec::new()
        }
    }

    fn quantize(&self, x: &Tensor, operand: Operand, bits: u32, learned: &[Tensor]) -> Result<Tensor> {
        self.check(operand, bits)?;
        if Precision::is_full(bits) {
            return Ok(x.relu()?);
        }
        let [alpha] = learned else {
            return Err(Error::msg(format!(
                "pact ({bits} bits): expected its learned clip alpha, got {} tensors (build the layer through the network)",
                learned.len()
            )));
        };
        let levels = ((1u64 << bits) - 1) as f64;
        let y = x.to_dtype(DType::F32)?.relu()?.broadcast_minimum(alpha)?;
        // y_q = round(y · L/α) · α/L, with the gradient of y (straight through the rounding).
        let scale = alpha.affine(1.0 / levels, 0.0)?;
        let yq = round_ste(&y.broadcast_div(&scale)?)?.broadcast_mul(&scale)?;
        Ok(y.add(&yq.sub(&y)?.detach())?)
    }
}

fn build(params: &Table) -> Result<Box<dyn Quantizer>> {
    let p: Pact = parse_params(ID, params)?;
    if !(p.init.is_finite() && p.init > 0.0) {
        return Err(Error::config(ID, "init", format!("must be a positive number, got {}", p.init)));
    }
    Ok(Box::new(p))
}

edmips_core::register_quantizer! {
    id: ID,
    summary: "PACT (Choi et al. 2018): learned activation clip alpha per layer and bit width, 1-8 bits; L2 on alpha via --wdq",
    params: Pact,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};

    #[test]
    fn forward_and_gradients_match_the_paper_in_f64() {
        let dev = Device::Cpu;
        let xv: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.613 + 0.2).sin() * 4.0 + 1.01).collect();
        let gu: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.29).cos()).collect();
        for bits in [1, 2, 3, 4, 8] {
            let a = 2.7f32;
            let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), (2, 3, 4, 4), &dev).unwrap()).unwrap();
            let alpha = Var::new(&[a], &dev).unwrap();
            let y = Pact::default().quantize(x.as_tensor(), Operand::Activation, bits, &[alpha.as_tensor().clone()]);
            let y = y.unwrap();
            let g = Tensor::from_vec(gu.clone(), (2, 3, 4, 4), &dev).unwrap();
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let got_y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got_gx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got_ga = grads.get(alpha.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
            let (a, l) = (a as f64, ((1u64 << bits) - 1) as f64);
            let mut want_ga = 0.0;
            for i in 0..xv.len() {
                let (x, u) = (xv[i] as f64, gu[i] as f64);
                let yc = x.clamp(0.0, a);
                let want = (yc * l / a).round_ties_even() * a / l;
                assert!((got_y[i] as f64 - want).abs() < 1e-5, "{bits}b y[{i}]: {} vs {want}", got_y[i]);
                let want_gx = if x > 0.0 && x < a { u } else { 0.0 };
                assert_eq!(got_gx[i] as f64, want_gx, "{bits}b dx[{i}] at x = {x}");
                if x > a {
                    want_ga += u;
                }
            }
            assert!((got_ga - want_ga).abs() < 1e-5, "{bits}b dalpha: {got_ga} vs {want_ga}");
        }
    }

    #[test]
    fn declares_alpha_for_activations_only_and_rejects_weights() {
        let p = Pact::default();
        assert_eq!(p.params(Operand::Activation, 2), vec![QuantParam::scalar(ALPHA, 10.0, false)]);
        assert!(p.params(Operand::Activation, 32).is_empty());
        let e = p.check(Operand::Weight, 2).unwrap_err().to_string();
        assert!(e.contains("dorefa"), "{e}");
        let t: Table = toml::from_str("init = -1.0").unwrap();
        assert!(build(&t).unwrap_err().to_string().contains("init"));
    }
}
