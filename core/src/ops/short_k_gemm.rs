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
/// Steps of `K` one pass over a column block takes: the `A` rows of a block and the `B` rows
/// of the pass stay in L1; the next pass goes on from the partial sums in `C` (the same FMA
/// chain as one pass).
const K_BLOCK: usize = 64;

/// Longest `K` for which the kernel beats the `gemm` crate. The Winograd products alone, one
/// thread, best of 15 (AMD EPYC, `M × N × K` = O × tiles × C): 16×256×16 0.79 of the `gemm`
/// crate's time (104 against 82 GFLOP/s), 32×256×32 0.86, 64×784×64 0.95, 128×196×128 1.07,
/// 256×98×256 1.18; inside whole training steps (per phase, 2 threads) the first three took 0.58,
/// 0.88 and 0.78.
const MAX_K: usize = 64;

/// Whether a product with this inner dimension takes the kernel of this file.
pub fn pays(k: usize) -> bool {
    k <= MAX_K
}

/// Whether the AVX2/FMA kernel runs on this processor (detected once).
pub fn available() -> bool {
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
/// FMA the kernel of this file, elsewhere [`matmul_packed`].
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn matmul_short_k(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul_short_k: operands shorter than {m}x{k}x{n}"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the assert above covers every index the kernel forms.
        return unsafe { avx2::matmul(m, n, k, a, b, c) };
    }
    matmul_packed(m, n, k, a, b, c);
}

/// The same product through the `gemm` crate, which packs both operands first: the path
/// [`matmul_short_k`] replaces (the CPU convolution's GEMM; for benches and tests).
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn matmul_packed(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul_packed: operands shorter than {m}x{k}x{n}"
    );
    super::conv_cpu::matmul(m, n, k, c, false, a, k as isize, 1, b, n as isize, 1);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{COLS, K_BLOCK, ROWS};

    /// The columns one register block covers: two full vectors (`MASKED` false), or the last
    /// `n % 16` columns through these lane masks (masked-out lanes are read as zero and never
    /// written). A type parameter, so the unmasked loop has no branch.
    #[derive(Clone, Copy)]
    struct Cols<const MASKED: bool> {
        masks: [__m256i; 2],
    }

    impl<const MASKED: bool> Cols<MASKED> {
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> [__m256; 2] {
            // SAFETY: the caller's pointer covers the block's columns (masked lanes are not read).
            unsafe {
                if MASKED {
                    [_mm256_maskload_ps(p, self.masks[0]), _mm256_maskload_ps(p.add(8), self.masks[1])]
                } else {
                    [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
                }
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: [__m256; 2]) {
            // SAFETY: as for `load` (masked lanes are not written).
            unsafe {
                if MASKED {
                    _mm256_maskstore_ps(p, self.masks[0], v[0]);
                    _mm256_maskstore_ps(p.add(8), self.masks[1], v[1]);
                } else {
                    _mm256_storeu_ps(p, v[0]);
                    _mm256_storeu_ps(p.add(8), v[1]);
                }
            }
        }
    }

    /// Rows `i..i + R` and the columns at `j` of `c`, over `k0..k1`: the chains start at zero
    /// when `k0 == 0` and go on from `c` otherwise (the same chain as one pass over `k`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize, const MASKED: bool>(
        (ap, bp, cp): (*const f32, *const f32, *mut f32),
        (n, k): (usize, usize),
        (i, j): (usize, usize),
        (k0, k1): (usize, usize),
        cols: Cols<MASKED>,
    ) {
        // SAFETY: rows i..i+R < m of `a` and `c`, rows k0..k1 ≤ k of `b`, and the columns the
        // caller's `cols` covers, all inside the slices.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if k0 > 0 {
                for (r, accr) in acc.iter_mut().enumerate() {
                    *accr = cols.load(cp.add((i + r) * n + j));
                }
            }
            for kk in k0..k1 {
                let [b0, b1] = cols.load(bp.add(kk * n + j));
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add((i + r) * k + kk));
                    accr[0] = _mm256_fmadd_ps(av, b0, accr[0]);
                    accr[1] = _mm256_fmadd_ps(av, b1, accr[1]);
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                cols.store(cp.add((i + r) * n + j), *accr);
            }
        }
    }

    /// The kernel behind [`super::matmul_short_k`].
    ///
    /// # Safety
    /// AVX2 and FMA must be present, and `a`, `b`, `c` must hold `m·k`, `k·n`, `m·n` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let ptrs = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let n16 = n / COLS * COLS;
        let tail = n - n16;
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            c[..m * n].fill(0.0);
            return;
        }
        let full = Cols::<false> { masks: [_mm256_setzero_si256(); 2] };
        for j in (0..n16).step_by(COLS) {
            // SAFETY: AVX2 and FMA are present (this function's contract); rows and columns stay
            // inside the operands' shapes (the caller's lengths).
            unsafe { column_block(ptrs, (m, n, k), j, full) };
        }
        if tail > 0 {
            // Lane q of the two tail vectors is live when q (or q + 8) < tail.
            let lane = |q: i32| if q < tail as i32 { -1 } else { 0 };
            let masked = Cols::<true> {
                masks: [
                    _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(4), lane(5), lane(6), lane(7)),
                    _mm256_setr_epi32(lane(8), lane(9), lane(10), lane(11), lane(12), lane(13), lane(14), lane(15)),
                ],
            };
            // SAFETY: as above; the masks keep the tail inside the rows.
            unsafe { column_block(ptrs, (m, n, k), n16, masked) };
        }
    }

    /// Every row block of the columns at `j`, pass after pass over `K`.
    #[inline(always)]
    unsafe fn column_block<const MASKED: bool>(
        ptrs: (*const f32, *const f32, *mut f32),
        (m, n, k): (usize, usize, usize),
        j: usize,
        cols: Cols<MASKED>,
    ) {
        let m4 = m / ROWS * ROWS;
        for k0 in (0..k).step_by(K_BLOCK) {
            let ks = (k0, (k0 + K_BLOCK).min(k));
            // SAFETY: the caller's contract.
            unsafe {
                for i in (0..m4).step_by(ROWS) {
                    block::<ROWS, MASKED>(ptrs, (n, k), (i, j), ks, cols);
                }
                for i in m4..m {
                    block::<1, MASKED>(ptrs, (n, k), (i, j), ks, cols);
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
        for (m, n, k) in [
            (16, 256, 16),
            (32, 64, 32),
            (5, 37, 9),
            (3, 15, 64),
            (1, 16, 7),
            (7, 1, 3),
            (4, 16, 1),
            (9, 98, 200),
            (130, 20, 256),
        ] {
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
    fn matches_the_gemm_crate_path_it_replaces() {
        // The Winograd product shapes of ResNet-20 and ResNet-18 (O × tiles × C) and ragged ones.
        for (m, n, k) in [(16, 256, 16), (32, 256, 32), (64, 98, 64), (13, 45, 40)] {
            let a = crate::init::det_fill(m * k, 25, 1.0);
            let b = crate::init::det_fill(k * n, 26, 1.0);
            let (mut ours, mut theirs) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            matmul_short_k(m, n, k, &a, &b, &mut ours);
            matmul_packed(m, n, k, &a, &b, &mut theirs);
            let (_, mag) = reference(m, n, k, &a, &b);
            for (i, ((&x, &y), s)) in ours.iter().zip(&theirs).zip(&mag).enumerate() {
                assert!(((x - y) as f64).abs() <= 2e-6 * s.max(1e-3), "{m}x{n}x{k} [{i}]: {x} vs {y}");
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
        let (m, n, k) = (9, 35, 150);
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
