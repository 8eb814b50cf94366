//! A matrix product for a short inner dimension, without packing: `C[m×n] = A[m×k] · B[k×n]`
//! for row-major operands, as the Winograd products `M_ξ = U_ξ · V_ξ` need them
//! ([`super::winograd`], decisions F12).
//!
//! There `K` is a layer's channel count (16 to 512) and `B` a `K × tiles` block that the input
//! transform has just written. The `gemm` crate packs `B` into its own panel layout before
//! every product: at `K` = 16 or 32 that copy costs as much as the multiply-adds. Here the
//! AVX2/FMA kernel reads `B` in place, 16 columns at a time: each step of `K` loads two vectors
//! of `B`'s row and broadcasts four values of `A`, into 4 × 16 accumulators held in registers,
//! so a `B` column block is read once per four rows of `A` (from L1 after the first).
//!
//! Every element is one fused multiply-add chain over `k = 0, 1, …` in order, on the vector
//! and the scalar edges alike, so a result does not depend on where its element falls; the
//! kernel is chosen at run time (AVX2 and FMA present), elsewhere the `gemm` crate runs.

/// Rows of `A` (and `C`) one register block takes.
const ROWS: usize = 4;
/// Columns of `B` (and `C`) one register block takes: two 8-lane vectors.
const COLS: usize = 16;

/// Longest `K` for which the kernel beats the `gemm` crate: per phase inside whole training
/// steps (AMD EPYC, 2 threads), the Winograd products of ResNet-20's 16- and 32-channel layers
/// and ResNet-18's 64-channel ones took 0.58, 0.88 and 0.78 of the `gemm` crate's time, its
/// 128- and 256-channel ones 1.26 and 1.50 (without `K` blocking, a tall `A` is read from L2 for
/// every 16 columns of `B`).
const MAX_K: usize = 64;

/// Whether a product with this inner dimension takes the kernel of this file.
pub(super) fn pays(k: usize) -> bool {
    k <= MAX_K
}

/// Whether the AVX2/FMA kernel runs on this processor (detected once).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major and contiguous (`c` overwritten). With AVX2 and
/// FMA the kernel of this file, elsewhere [`super::conv_cpu::matmul`].
pub(super) fn matmul_short_k(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul_short_k: operands shorter than {m}x{k}x{n}"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the assert above covers every index the kernel forms.
        return unsafe { avx2::matmul(m, n, k, a, b, c) };
    }
    super::conv_cpu::matmul(m, n, k, c, false, a, k as isize, 1, b, n as isize, 1);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{COLS, ROWS};

    /// The kernel behind [`super::matmul_short_k`].
    ///
    /// # Safety
    /// AVX2 and FMA must be present, and `a`, `b`, `c` must hold `m·k`, `k·n`, `m·n` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let (n16, m4) = (n / COLS * COLS, m / ROWS * ROWS);
        // SAFETY (whole function): every pointer below is `base + row·stride + col` with
        // row < m (a, c) or < k (b) and col + width ≤ the row's length, inside the slices.
        unsafe {
            for j in (0..n16).step_by(COLS) {
                for i in (0..m4).step_by(ROWS) {
                    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
                    for kk in 0..k {
                        let brow = bp.add(kk * n + j);
                        let (b0, b1) = (_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.add(8)));
                        for (r, accr) in acc.iter_mut().enumerate() {
                            let av = _mm256_broadcast_ss(&*ap.add((i + r) * k + kk));
                            accr[0] = _mm256_fmadd_ps(av, b0, accr[0]);
                            accr[1] = _mm256_fmadd_ps(av, b1, accr[1]);
                        }
                    }
                    for (r, accr) in acc.iter().enumerate() {
                        let crow = cp.add((i + r) * n + j);
                        _mm256_storeu_ps(crow, accr[0]);
                        _mm256_storeu_ps(crow.add(8), accr[1]);
                    }
                }
                for i in m4..m {
                    let mut acc = [_mm256_setzero_ps(); 2];
                    for kk in 0..k {
                        let brow = bp.add(kk * n + j);
                        let av = _mm256_broadcast_ss(&*ap.add(i * k + kk));
                        acc[0] = _mm256_fmadd_ps(av, _mm256_loadu_ps(brow), acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(brow.add(8)), acc[1]);
                    }
                    _mm256_storeu_ps(cp.add(i * n + j), acc[0]);
                    _mm256_storeu_ps(cp.add(i * n + j + 8), acc[1]);
                }
            }
            // The last `n % 16` columns: the same chain per element, scalar FMAs.
            for i in 0..m {
                for j in n16..n {
                    let mut s = 0f32;
                    for kk in 0..k {
                        s = (*ap.add(i * k + kk)).mul_add(*bp.add(kk * n + j), s);
                    }
                    *cp.add(i * n + j) = s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in f64, and each element's sum of |terms|.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (mut c, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    let t = a[i * k + kk] as f64 * b[kk * n + j] as f64;
                    c[i * n + j] += t;
                    mag[i * n + j] += t.abs();
                }
            }
        }
        (c, mag)
    }

    #[test]
    fn matches_an_f64_product_on_blocks_and_edges() {
        // Whole register blocks, row and column edges, a single row or column, k = 1.
        for (m, n, k) in [(16, 256, 16), (32, 64, 32), (5, 37, 9), (3, 15, 64), (1, 16, 7), (7, 1, 3), (4, 16, 1)] {
            let a = crate::init::det_fill(m * k, 21, 1.0);
            let b = crate::init::det_fill(k * n, 22, 1.0);
            let mut c = vec![f32::NAN; m * n];
            matmul_short_k(m, n, k, &a, &b, &mut c);
            let (want, mag) = reference(m, n, k, &a, &b);
            for (i, ((&got, w), s)) in c.iter().zip(&want).zip(&mag).enumerate() {
                assert!((got as f64 - w).abs() <= 1e-6 * s.max(1e-3), "{m}x{n}x{k} [{i}]: {got} vs {w}");
            }
        }
    }

    #[test]
    fn every_element_is_the_same_fma_chain_wherever_it_falls() {
        // An element's bits do not depend on whether it sits in a register block or an edge:
        // the same rows and columns placed at other offsets give the same values.
        if !available() {
            return;
        }
        let (m, n, k) = (9, 35, 20);
        let a = crate::init::det_fill(m * k, 23, 1.0);
        let b = crate::init::det_fill(k * n, 24, 1.0);
        let mut c = vec![0f32; m * n];
        matmul_short_k(m, n, k, &a, &b, &mut c);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for kk in 0..k {
                    s = a[i * k + kk].mul_add(b[kk * n + j], s);
                }
                assert_eq!(c[i * n + j].to_bits(), s.to_bits(), "[{i}][{j}]");
            }
        }
    }
}
