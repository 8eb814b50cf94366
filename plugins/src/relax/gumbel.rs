//! The Gumbel-softmax relaxation (Jang, Gu & Poole, "Categorical Reparameterization with
//! Gumbel-Softmax", ICLR 2017), as DNAS (Wu et al., 2018) and FBNet (Wu et al., CVPR 2019) use
//! it for architecture search.
//!
//! In training, the mixing weights are `softmax((logits + g) / τ)` with i.i.d. Gumbel noise
//! `g_i = -ln(-ln u_i)`, `u_i ~ U(0, 1)`. The noise is a pure function of
//! `(seed, step, stream, i)` (a SplitMix64 hash, not a random-number generator with state), so
//! a run is reproducible and a resume draws exactly the noise the uninterrupted run would.
//! With `hard = true` the forward value is the one-hot of the noisy argmax and the gradient is
//! the soft weights' (straight-through). Outside training (validation, reports) there is no
//! noise: `softmax(logits / τ)`. The discrete pick is the argmax of the logits, first index on
//! ties.
//!
//! The temperature anneals per epoch: `τ(e) = max(final, initial · decay^e)` (FBNet: initial
//! 5.0, decay 0.956). The defaults below are FBNet's schedule.

use edmips_core::candle::{DType, Tensor};
use edmips_core::{parse_params, Error, RelaxContext, Relaxation, Result, Table};

/// The registry id.
pub const ID: &str = "gumbel";

edmips_core::plugin_params! {
    /// Gumbel-softmax relaxation; also its typed parameters (FBNet's schedule by default).
    pub struct Gumbel {
        /// Temperature at epoch 0.
        pub initial_temperature: f64 = 5.0,
        /// Lowest temperature of the schedule.
        pub final_temperature: f64 = 0.1,
        /// Factor applied to the temperature per epoch, in (0, 1].
        pub decay: f64 = 0.956,
        /// Straight-through one-hot forward (hard Gumbel-softmax).
        pub hard: bool = false,
        /// Initial value of every logit.
        pub init: f64 = 0.0,
    }
}

impl Copy for Gumbel {}

/// SplitMix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Gumbel {
    /// The temperature of `epoch`.
    pub fn temperature(&self, epoch: usize) -> f64 {
        (self.initial_temperature * self.decay.powi(epoch as i32)).max(self.final_temperature)
    }

    /// The Gumbel noise of `n` candidates under `ctx`: a pure function of
    /// `(ctx.seed, ctx.step, ctx.stream, i)`.
    pub fn noise(ctx: &RelaxContext, n: usize) -> Vec<f64> {
        let base = mix64(mix64(mix64(ctx.seed) ^ ctx.step) ^ ctx.stream.wrapping_mul(0x2545_f491_4f6c_dd1d));
        (0..n as u64)
            .map(|i| {
                let u =
                    ((mix64(base ^ i.wrapping_mul(0xd6e8_feb8_6659_fd93)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                -(-u.ln()).ln()
            })
            .collect()
    }
}

impl Relaxation for Gumbel {
    fn id(&self) -> &str {
        ID
    }

    fn init_logits(&self, n: usize) -> Vec<f32> {
        vec![self.init as f32; n]
    }

    fn weights(&self, logits: &Tensor, ctx: &RelaxContext) -> Result<Tensor> {
        let z = logits.to_dtype(DType::F32)?;
        let n = z.dim(0)?;
        let z = if ctx.training {
            let g: Vec<f32> = Self::noise(ctx, n).into_iter().map(|v| v as f32).collect();
            z.add(&Tensor::from_vec(g, n, z.device())?)?
        } else {
            z
        };
        let z = (z / self.temperature(ctx.epoch))?;
        let m = z.max_keepdim(0)?.detach();
        let e = z.broadcast_sub(&m)?.exp()?;
        let soft = e.broadcast_div(&e.sum_keepdim(0)?)?;
        if !(self.hard && ctx.training) {
            return Ok(soft);
        }
        let host: Vec<f32> = soft.to_vec1()?;
        let k = edmips_core::argmax_first(&host);
        let mut one_hot = vec![0f32; n];
        one_hot[k] = 1.0;
        let hard = Tensor::from_vec(one_hot, n, soft.device())?;
        // Forward: the one-hot; backward: the soft weights' gradient.
        Ok(hard.sub(&soft.detach())?.add(&soft)?)
    }
}

fn build(params: &Table) -> Result<Box<dyn Relaxation>> {
    let p: Gumbel = parse_params(ID, params)?;
    for (k, v) in [("initial_temperature", p.initial_temperature), ("final_temperature", p.final_temperature)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::config(ID, k, format!("must be a positive number, got {v}")));
        }
    }
    if !(p.decay.is_finite() && p.decay > 0.0 && p.decay <= 1.0) {
        return Err(Error::config(ID, "decay", format!("must be in (0, 1], got {}", p.decay)));
    }
    Ok(Box::new(p))
}

edmips_core::register_relaxation! {
    id: ID,
    summary: "Gumbel-softmax (Jang et al. 2017; DNAS/FBNet): noise from (seed, step, layer), annealed temperature, optional hard straight-through",
    params: Gumbel,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};

    fn ctx(step: u64, stream: u64) -> RelaxContext {
        RelaxContext::train(0, step, 7).for_stream(stream)
    }

    #[test]
    fn weights_and_gradient_match_a_float64_gumbel_softmax() {
        let g = Gumbel { initial_temperature: 2.0, ..Default::default() };
        let l = [0.3f32, -0.2, 0.5, 0.1];
        let v = Var::new(&l, &Device::Cpu).unwrap();
        let c = ctx(3, 5);
        let w = g.weights(v.as_tensor(), &c).unwrap();
        let coef = [1.0f32, 2.0, 3.0, 4.0];
        let loss = w.mul(&Tensor::new(&coef, &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        let grad = loss.backward().unwrap().get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let noise = Gumbel::noise(&c, 4);
        let f = |x: &[f64]| -> Vec<f64> {
            let z: Vec<f64> = x.iter().zip(&noise).map(|(a, n)| (a + n) / 2.0).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        let x: Vec<f64> = l.iter().map(|&v| v as f64).collect();
        let want = f(&x);
        let wv = w.to_vec1::<f32>().unwrap();
        for i in 0..4 {
            assert!((wv[i] as f64 - want[i]).abs() < 1e-6, "{i}: {} vs {}", wv[i], want[i]);
            let h = 1e-5;
            let (mut p, mut q) = (x.clone(), x.clone());
            p[i] += h;
            q[i] -= h;
            let obj = |y: &[f64]| f(y).iter().zip(&coef).map(|(a, b)| a * *b as f64).sum::<f64>();
            let fd = (obj(&p) - obj(&q)) / (2.0 * h);
            assert!((grad[i] as f64 - fd).abs() < 1e-4, "d/dlogit {i}: {} vs fd {fd}", grad[i]);
        }
    }

    #[test]
    fn noise_is_a_pure_function_of_seed_step_and_stream() {
        assert_eq!(Gumbel::noise(&ctx(4, 1), 3), Gumbel::noise(&ctx(4, 1), 3));
        assert_ne!(Gumbel::noise(&ctx(4, 1), 3), Gumbel::noise(&ctx(5, 1), 3));
        assert_ne!(Gumbel::noise(&ctx(4, 1), 3), Gumbel::noise(&ctx(4, 2), 3));
        // Gumbel(0, 1): mean ≈ Euler–Mascheroni constant 0.5772, variance π²/6.
        let n: Vec<f64> = (0..4000).flat_map(|s| Gumbel::noise(&ctx(s, 0), 1)).collect();
        let mean = n.iter().sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!((mean - 0.5772).abs() < 0.06 && (var - 1.6449).abs() < 0.15, "mean {mean} var {var}");
    }

    #[test]
    fn hard_is_one_hot_forward_with_the_soft_gradient_and_eval_has_no_noise() {
        let hard = Gumbel { hard: true, ..Default::default() };
        let soft = Gumbel::default();
        let l = [0.2f32, 0.9, -0.4];
        let v = Var::new(&l, &Device::Cpu).unwrap();
        let c = ctx(2, 0);
        let y = hard.weights(v.as_tensor(), &c).unwrap();
        let yv = y.to_vec1::<f32>().unwrap();
        assert_eq!(yv.iter().filter(|&&x| x == 1.0).count(), 1);
        assert_eq!(yv.iter().filter(|&&x| x == 0.0).count(), 2);
        let coef = Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let gh = y.mul(&coef).unwrap().sum_all().unwrap().backward().unwrap();
        let ys = soft.weights(v.as_tensor(), &c).unwrap();
        let gs = ys.mul(&coef).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (
            gh.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            gs.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6), "{a:?} vs {b:?}");
        let e = soft.weights(v.as_tensor(), &RelaxContext::eval()).unwrap().to_vec1::<f32>().unwrap();
        let z: Vec<f64> = l.iter().map(|&x| (x as f64 / 5.0).exp()).collect();
        let s: f64 = z.iter().sum();
        assert!(e.iter().zip(&z).all(|(p, q)| (*p as f64 - q / s).abs() < 1e-6));
    }

    #[test]
    fn the_temperature_anneals_to_its_floor_and_bad_parameters_are_named() {
        let g = Gumbel::default();
        assert_eq!(g.temperature(0), 5.0);
        assert!((g.temperature(10) - 5.0 * 0.956f64.powi(10)).abs() < 1e-12);
        assert_eq!(g.temperature(1000), 0.1);
        let t: Table = toml::from_str("decay = 1.5").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("gumbel") && e.contains("decay"), "{e}");
    }
}
