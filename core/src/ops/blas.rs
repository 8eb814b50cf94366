//! Single-precision GEMM through the system OpenBLAS (`openblas` feature), for the CPU
//! convolution's large per-sample products.
//!
//! Measured against the `gemm` crate on the development machine (decisions F11), one thread
//! per call: OpenBLAS (its runtime-selected AVX-512 kernel) is 10-25% faster at ResNet-18's
//! convolution shapes (`m·n·k` of 30-120 M) and 7-16% slower at CIFAR ResNet-20's (about
//! 2.4 M), hence [`BLAS_MIN_MACS`]. The library is told to use one thread: the convolution
//! runs samples in parallel itself, and one thread per call keeps every product's summation
//! order fixed, so results stay independent of the thread count.

use std::os::raw::c_int;

/// Products with at least this many multiply-adds (`m·n·k`) go to OpenBLAS; smaller ones stay
/// on the `gemm` crate, which is faster there.
pub const BLAS_MIN_MACS: usize = 1 << 23;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(
        order: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(n: c_int);
}

/// How an operand is stored, from its row and column strides: `(transposed, leading dim)`, or
/// `None` when neither stride is 1 (BLAS cannot take it).
fn operand(rs: isize, cs: isize) -> Option<(c_int, c_int)> {
    match (rs, cs) {
        (_, 1) => Some((NO_TRANS, c_int::try_from(rs).ok()?)),
        (1, _) => Some((TRANS, c_int::try_from(cs).ok()?)),
        _ => None,
    }
}

/// Row-major `dst[m×n] = (accumulate ? dst : 0) + a[m×k]·b[k×n]` through OpenBLAS, with `a` and
/// `b` given by their strides (one of each pair must be 1). Returns `false`, touching nothing,
/// when the shapes or strides are outside what BLAS takes; the caller then uses its own GEMM.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
) -> bool {
    static ONE_THREAD: std::sync::Once = std::sync::Once::new();
    let (Some((ta, lda)), Some((tb, ldb))) = (operand(a_rs, a_cs), operand(b_rs, b_cs)) else {
        return false;
    };
    let (Ok(mi), Ok(ni), Ok(ki)) = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k)) else {
        return false;
    };
    if dst.len() < m * n || m == 0 || n == 0 || k == 0 {
        return false;
    }
    // SAFETY: plain FFI calls. The thread count is set once, before any product; the caller's
    // shapes and strides address only elements inside `a`, `b` and `dst` (as for the `gemm`
    // crate path), and `ldc = n` matches `dst`'s row-major layout.
    unsafe {
        ONE_THREAD.call_once(|| openblas_set_num_threads(1));
        cblas_sgemm(
            ROW_MAJOR,
            ta,
            tb,
            mi,
            ni,
            ki,
            1.0,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            if accumulate { 1.0 } else { 0.0 },
            dst.as_mut_ptr(),
            ni,
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenBLAS against an f64 reference, in all four operand orientations, overwriting and
    /// accumulating.
    #[test]
    fn sgemm_matches_a_float64_reference_in_every_orientation() {
        let (m, n, k) = (37, 29, 53);
        let a = crate::init::det_fill(m * k, 1, 1.0);
        let b = crate::init::det_fill(k * n, 2, 1.0);
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let init = crate::init::det_fill(m * n, 3, 1.0);
        for accumulate in [false, true] {
            let want: Vec<f64> = (0..m * n)
                .map(|e| {
                    let (r, c) = (e / n, e % n);
                    let dot: f64 = (0..k).map(|p| a[r * k + p] as f64 * b[p * n + c] as f64).sum();
                    dot + if accumulate { init[e] as f64 } else { 0.0 }
                })
                .collect();
            for (aa, ars, acs) in [(&a, k as isize, 1), (&at, 1, m as isize)] {
                for (bb, brs, bcs) in [(&b, n as isize, 1), (&bt, 1, k as isize)] {
                    let mut dst = init.clone();
                    assert!(sgemm(m, n, k, &mut dst, accumulate, aa, ars, acs, bb, brs, bcs));
                    let err = dst.iter().zip(&want).map(|(&d, &w)| (d as f64 - w).abs()).fold(0.0, f64::max);
                    assert!(err < 1e-4, "error {err} (a strides {ars},{acs}; b strides {brs},{bcs})");
                }
            }
        }
        let mut dst = vec![0f32; m * n];
        assert!(!sgemm(m, n, k, &mut dst, false, &a, 2, 2, &b, n as isize, 1), "no unit stride");
    }
}
