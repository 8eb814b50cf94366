//! Fixed-order f64 sums that vectorise: the partial sums of the CPU kernels' reductions.
//!
//! A plain `acc += v` loop over f64 is one serial chain of additions (the processor waits for
//! each add before the next), and the compiler may not reorder it. Here element `e` of a slice
//! adds to lane `e mod LANES`, and the lanes are summed pairwise at the end, so the loop runs
//! [`LANES`] independent chains (vector adds) in an order fixed by the data layout alone: the
//! result is the same on every code path and thread count.

/// Independent accumulators per sum.
pub const LANES: usize = 8;

/// The fixed pairwise sum of the lanes: `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
#[inline(always)]
pub fn sum_lanes(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// `Σ_e f(xs[e])`, element `e` in lane `e mod LANES`.
#[inline(always)]
pub fn sum_by_lanes(xs: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for v in chunks {
        for l in 0..LANES {
            lanes[l] += f(v[l]);
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        lanes[l] += f(v);
    }
    sum_lanes(&lanes)
}

/// `Σ_e f(a[e], b[e])` over two slices of one length, element `e` in lane `e mod LANES`.
#[inline(always)]
pub fn sum_zip_by_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    sum2_by_lanes(a, b, |x, y| (f(x, y), 0.0)).0
}

/// `(Σ_e f(a[e], b[e]).0, Σ_e f(a[e], b[e]).1)` over two slices of one length, element `e` in
/// lane `e mod LANES` of each sum.
#[inline(always)]
pub fn sum2_by_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let (mut l0, mut l1) = ([0f64; LANES], [0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (va, vb) in ca.zip(cb) {
        for l in 0..LANES {
            let (p, q) = f(va[l], vb[l]);
            l0[l] += p;
            l1[l] += q;
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        let (p, q) = f(x, y);
        l0[l] += p;
        l1[l] += q;
    }
    (sum_lanes(&l0), sum_lanes(&l1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane sums against the definition (each lane a serial sum of its elements, then the
    /// pairwise combination), bitwise, for lengths around multiples of the lane count.
    #[test]
    fn lane_sums_follow_their_definition() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 100] {
            let a = crate::init::det_fill(n, 3, 1.0);
            let b = crate::init::det_fill(n, 4, 1.0);
            let mut want = [0f64; LANES];
            let mut want2 = ([0f64; LANES], [0f64; LANES]);
            for e in 0..n {
                want[e % LANES] += a[e] as f64 * 2.0;
                want2.0[e % LANES] += a[e] as f64;
                want2.1[e % LANES] += a[e] as f64 * b[e] as f64;
            }
            assert_eq!(sum_by_lanes(&a, |v| v as f64 * 2.0), sum_lanes(&want), "n = {n}");
            assert_eq!(sum_zip_by_lanes(&a, &b, |x, y| x as f64 * y as f64), sum_lanes(&want2.1), "n = {n}");
            let got = sum2_by_lanes(&a, &b, |x, y| (x as f64, x as f64 * y as f64));
            assert_eq!(got, (sum_lanes(&want2.0), sum_lanes(&want2.1)), "n = {n}");
            let exact: f64 = a.iter().map(|&v| v as f64 * 2.0).sum();
            assert!((sum_by_lanes(&a, |v| v as f64 * 2.0) - exact).abs() <= 1e-12 * (1.0 + exact.abs()));
        }
    }
}
