//! Weight initialisation with our own seeded RNG (decision D18), and the golden data's
//! RNG-free `det_fill`.
//!
//! [`Rng`] is SplitMix64: tiny, fast, and its whole state is one `u64`, so checkpoints can save
//! and restore it exactly.

use serde::{Deserialize, Serialize};

/// SplitMix64 pseudo-random generator with a serialisable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    /// The full generator state.
    pub state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator derived from `seed` and a stream of labels (e.g. epoch, sample index), so
    /// that each (seed, labels) pair has its own independent sequence.
    pub fn derive(seed: u64, labels: &[u64]) -> Self {
        let mut r = Rng::new(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        for &l in labels {
            r.state ^= l.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            r.next_u64();
        }
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the bias is below 2^-64 · n, irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Normal with this std, redrawn until within ±2 std (scipy's `truncnorm(-2, 2)`).
    pub fn trunc_normal(&mut self, std: f64) -> f64 {
        loop {
            let z = self.normal();
            if z.abs() <= 2.0 {
                return z * std;
            }
        }
    }

    /// A random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// He normal with fan-out: `N(0, sqrt(2 / (kh·kw·C_out)))` for an OIHW weight.
pub fn he_fan_out(rng: &mut Rng, out: usize, kh: usize, kw: usize, n: usize) -> Vec<f32> {
    let std = (2.0 / (kh * kw * out) as f64).sqrt();
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

/// Truncated normal (±2 std).
pub fn trunc_normal(rng: &mut Rng, std: f64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.trunc_normal(std) as f32).collect()
}

/// PyTorch's default `Linear` init: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (weight and bias).
pub fn linear_default(rng: &mut Rng, fan_in: usize, n: usize) -> Vec<f32> {
    let b = 1.0 / (fan_in as f64).sqrt();
    (0..n).map(|_| rng.uniform_range(-b, b) as f32).collect()
}

/// The golden data's RNG-free initialisation (see `shared/golden/README.md`): element `i` of a
/// row-major tensor is `scale · (2u - 1)` with `u` from a SplitMix-style hash of `(i, seed)`.
pub fn det_fill(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64;
            (scale * (2.0 * u - 1.0)) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_fill_matches_the_golden_check_values() {
        assert_eq!(det_fill(4, 0, 1.0), vec![-0.64797485, -0.08186538, 0.05043742, -0.2803562]);
        assert_eq!(det_fill(1, 1000, 1.0), vec![0.03622133]);
    }

    #[test]
    fn normal_has_unit_moments_and_trunc_normal_is_bounded() {
        let mut r = Rng::new(7);
        let v: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {m} var {var}");
        assert!((0..10_000).all(|_| r.trunc_normal(0.1).abs() <= 0.2));
    }

    #[test]
    fn permutation_is_a_permutation_and_derive_separates_streams() {
        let mut p = Rng::new(1).permutation(1000);
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        assert_ne!(Rng::derive(1, &[0, 5]).next_u64(), Rng::derive(1, &[0, 6]).next_u64());
        assert_eq!(Rng::derive(1, &[2]).next_u64(), Rng::derive(1, &[2]).next_u64());
    }
}
