//! The softmax relaxation of EdMIPS (decisions.md R4): logits start at 0.01 (uniform weights), mixing
//! weights are `softmax(logits / T)` (T = 1 in the reference), and the discrete pick is the
//! argmax with ties to the first index (D9).

use edmips_core::candle::{DType, Tensor};
use edmips_core::{parse_params, Error, RelaxContext, Relaxation, Result, Table};

/// The registry id.
pub const ID: &str = "softmax";

edmips_core::plugin_params! {
    /// Softmax relaxation; also its typed parameters (the defaults are the reference's).
    pub struct Softmax {
        /// Initial value of every logit (0.01 in the reference).
        pub init: f64 = 0.01,
        /// Softmax temperature (1.0 in the reference).
        pub temperature: f64 = 1.0,
    }
}

impl Copy for Softmax {}

impl Relaxation for Softmax {
    fn id(&self) -> &str {
        ID
    }

    fn init_logits(&self, n: usize) -> Vec<f32> {
        vec![self.init as f32; n]
    }

    fn weights(&self, logits: &Tensor, _ctx: &RelaxContext) -> Result<Tensor> {
        let z = logits.to_dtype(DType::F32)?;
        let z = if self.temperature == 1.0 { z } else { (z / self.temperature)? };
        // Shift by the (detached) max for stability; the shift cancels in the gradient.
        let m = z.max_keepdim(0)?.detach();
        let e = z.broadcast_sub(&m)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(0)?)?)
    }
}

fn build(params: &Table) -> Result<Box<dyn Relaxation>> {
    let p: Softmax = parse_params(ID, params)?;
    if !(p.temperature > 0.0 && p.temperature.is_finite()) {
        return Err(Error::config(ID, "temperature", format!("must be a positive number, got {}", p.temperature)));
    }
    Ok(Box::new(p))
}

edmips_core::register_relaxation! {
    id: ID,
    summary: "Softmax over per-layer bit logits (init 0.01); final pick = argmax, first index on ties",
    params: Softmax,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};

    #[test]
    fn weights_and_gradient_match_a_float64_softmax() {
        let l = [0.3f32, -0.2, 0.5, 0.1];
        let v = Var::new(&l, &Device::Cpu).unwrap();
        let w = Softmax::default().weights(v.as_tensor(), &RelaxContext::default()).unwrap();
        let c = [1.0f32, 2.0, 3.0, 4.0];
        let loss = w.mul(&Tensor::new(&c, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap().get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let e: Vec<f64> = l.iter().map(|&x| (x as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|x| x / s).collect();
        let mean: f64 = p.iter().zip(&c).map(|(p, c)| p * *c as f64).sum();
        let wv = w.to_vec1::<f32>().unwrap();
        for i in 0..4 {
            assert!((wv[i] as f64 - p[i]).abs() < 1e-7);
            assert!((g[i] as f64 - p[i] * (c[i] as f64 - mean)).abs() < 1e-6);
        }
        assert_eq!(Softmax::default().pick(&[0.01, 0.01, 0.01]), 0);
    }

    #[test]
    fn bad_parameters_are_reported_with_the_key() {
        let t: Table = toml::from_str("temperature = -1.0").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("temperature") && e.contains("softmax"), "{e}");
        let t: Table = toml::from_str("temprature = 2.0").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("temprature") && e.contains("known parameters"), "{e}");
    }
}
