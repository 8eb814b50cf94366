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
    debug_assert_eq!(a.len(), b.len());
    let mut l0 = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (va, vb) in ca.zip(cb) {
        for l in 0..LANES {
            l0[l] += f(va[l], vb[l]);
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        l0[l] += f(x, y);
    }
    sum_lanes(&l0)
}

/// `(Σ_e f(a[e], b[e]), Σ_e h(a[e], b[e]))` over two slices of one length, element `e` in
/// lane `e mod LANES` of each sum.
///
/// Two scalar functions rather than one returning a pair: a closure returning `(f64, f64)`
/// makes the compiler keep each element's pair in one two-wide register, which shuffles
/// every element and does not vectorise across lanes (it was 6.6% of a ResNet-20 step).
#[inline(always)]
pub fn sum2_by_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64, h: impl Fn(f32, f32) -> f64) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let (mut l0, mut l1) = ([0f64; LANES], [0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (va, vb) in ca.zip(cb) {
        for l in 0..LANES {
            l0[l] += f(va[l], vb[l]);
            l1[l] += h(va[l], vb[l]);
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        l0[l] += f(x, y);
        l1[l] += h(x, y);
    }
    (sum_lanes(&l0), sum_lanes(&l1))
}

/// Eight f64 lanes as one value, the unit of the explicit reductions ([`reduce`],
/// [`reduce2`], [`reduce_dot`]): a plain array in the portable build, two AVX `__m256d` in
/// the AVX2 build ([`avx2::F64x8`]). Lane `l` holds the partial sum of the elements
/// `e ≡ l (mod 8)`, exactly as in [`sum_by_lanes`], and both types do the same IEEE
/// operations per lane, so every build gives the same bits as the scalar lane loops.
///
/// Written out because the compiler's own vectorisation of the lane loops was poor where a
/// sum has two accumulators or a non-trivial element function (shuffles, two-wide registers
/// and spills, seen in `perf annotate`).
pub(crate) trait Wide: Copy {
    /// All lanes `v`.
    fn splat(v: f64) -> Self;
    /// The first 8 values of `s` (which must hold them), widened to f64.
    fn load(s: &[f32]) -> Self;
    /// Lane-wise `self + o`.
    fn add(self, o: Self) -> Self;
    /// Lane-wise `self - o`.
    fn sub(self, o: Self) -> Self;
    /// Lane-wise `self · o`.
    fn mul(self, o: Self) -> Self;
    /// The lanes in order.
    fn lanes(self) -> [f64; LANES];
}

impl Wide for [f64; LANES] {
    #[inline(always)]
    fn splat(v: f64) -> Self {
        [v; LANES]
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let s = &s[..LANES];
        std::array::from_fn(|l| s[l] as f64)
    }
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        for (a, b) in self.iter_mut().zip(o) {
            *a += b;
        }
        self
    }
    #[inline(always)]
    fn sub(mut self, o: Self) -> Self {
        for (a, b) in self.iter_mut().zip(o) {
            *a -= b;
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, o: Self) -> Self {
        for (a, b) in self.iter_mut().zip(o) {
            *a *= b;
        }
        self
    }
    #[inline(always)]
    fn lanes(self) -> [f64; LANES] {
        self
    }
}

/// The AVX2 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{Wide, LANES};

    /// Lanes 0–3 and 4–7 in two `__m256d`. The intrinsics need AVX: values of this type are
    /// only made and used inside `#[target_feature(enable = "avx2")]` functions (the AVX2
    /// versions that [`multiversion!`](crate::ops::cpu_path::multiversion) writes), into which
    /// these always-inlined methods are compiled.
    #[derive(Clone, Copy)]
    pub(crate) struct F64x8(__m256d, __m256d);

    impl Wide for F64x8 {
        #[inline(always)]
        fn splat(v: f64) -> Self {
            // SAFETY: AVX, see the type's note.
            unsafe { F64x8(_mm256_set1_pd(v), _mm256_set1_pd(v)) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..LANES];
            // SAFETY: `s` holds 8 floats (checked by the slice); AVX as for `splat`.
            unsafe {
                let v = _mm256_loadu_ps(s.as_ptr());
                F64x8(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)))
            }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: as for `splat`.
            unsafe { F64x8(_mm256_add_pd(self.0, o.0), _mm256_add_pd(self.1, o.1)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: as for `splat`.
            unsafe { F64x8(_mm256_sub_pd(self.0, o.0), _mm256_sub_pd(self.1, o.1)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: as for `splat`.
            unsafe { F64x8(_mm256_mul_pd(self.0, o.0), _mm256_mul_pd(self.1, o.1)) }
        }
        #[inline(always)]
        fn lanes(self) -> [f64; LANES] {
            let mut out = [0f64; LANES];
            // SAFETY: `out` holds 8 doubles; AVX as for `splat`.
            unsafe {
                _mm256_storeu_pd(out.as_mut_ptr(), self.0);
                _mm256_storeu_pd(out.as_mut_ptr().add(4), self.1);
            }
            out
        }
    }
}

/// The last `xs.len() mod 8` values of `xs`, zero-padded to 8, and how many there are.
#[inline(always)]
fn tail(xs: &[f32]) -> ([f32; LANES], usize) {
    let r = xs.len() % LANES;
    let mut t = [0f32; LANES];
    t[..r].copy_from_slice(&xs[xs.len() - r..]);
    (t, r)
}

/// Adds lane `l` of `v` to `acc[l]` for the first `r` lanes only (a slice's remainder).
#[inline(always)]
fn add_first(acc: &mut [f64; LANES], v: [f64; LANES], r: usize) {
    for l in 0..r {
        acc[l] += v[l];
    }
}

/// `Σ_e f(x_e)` in [`LANES`] lanes, `f` applied to eight widened values at a time: the same
/// bits as [`sum_by_lanes`] with the same per-element function.
#[inline(always)]
pub(crate) fn reduce<W: Wide>(xs: &[f32], f: impl Fn(W) -> W) -> f64 {
    let mut acc = W::splat(0.0);
    for v in xs.chunks_exact(LANES) {
        acc = acc.add(f(W::load(v)));
    }
    let mut acc = acc.lanes();
    let (t, r) = tail(xs);
    if r > 0 {
        add_first(&mut acc, f(W::load(&t)).lanes(), r);
    }
    sum_lanes(&acc)
}

/// `(Σ_e f(a_e, b_e), Σ_e h(a_e, b_e))` over two slices of one length, as [`reduce`]: the same
/// bits as [`sum2_by_lanes`].
#[inline(always)]
pub(crate) fn reduce2<W: Wide>(a: &[f32], b: &[f32], f: impl Fn(W, W) -> W, h: impl Fn(W, W) -> W) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let (mut s0, mut s1) = (W::splat(0.0), W::splat(0.0));
    for (va, vb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        let (va, vb) = (W::load(va), W::load(vb));
        s0 = s0.add(f(va, vb));
        s1 = s1.add(h(va, vb));
    }
    let (mut s0, mut s1) = (s0.lanes(), s1.lanes());
    let ((ta, r), (tb, _)) = (tail(a), tail(b));
    if r > 0 {
        let (va, vb) = (W::load(&ta), W::load(&tb));
        add_first(&mut s0, f(va, vb).lanes(), r);
        add_first(&mut s1, h(va, vb).lanes(), r);
    }
    (sum_lanes(&s0), sum_lanes(&s1))
}

/// `Σ_e q(a_e)·b_e` with `q` an f32 function applied before widening: the same bits as
/// `sum_zip_by_lanes(a, b, |x, y| q(x) as f64 * y as f64)`.
#[inline(always)]
pub(crate) fn reduce_dot<W: Wide>(a: &[f32], b: &[f32], q: impl Fn(f32) -> f32) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = W::splat(0.0);
    for (va, vb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        let qa: [f32; LANES] = std::array::from_fn(|l| q(va[l]));
        acc = acc.add(W::load(&qa).mul(W::load(vb)));
    }
    let mut acc = acc.lanes();
    let ((ta, r), (tb, _)) = (tail(a), tail(b));
    if r > 0 {
        let qa: [f32; LANES] = std::array::from_fn(|l| q(ta[l]));
        add_first(&mut acc, W::load(&qa).mul(W::load(&tb)).lanes(), r);
    }
    sum_lanes(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu_path::{multiversion_wide, CpuPath};

    multiversion_wide! {
        /// The three explicit reductions with non-trivial element functions.
        fn wide_sums<W>(a: &[f32], b: &[f32]) -> (f64, (f64, f64), f64) {
            let (m, k) = (W::splat(0.375), W::splat(1.5));
            let r = reduce::<W>(a, |v| v.sub(m).mul(v.sub(m)));
            let r2 = reduce2::<W>(a, b, |x, _| x, |x, y| x.mul(y.sub(m)).mul(k));
            let d = reduce_dot::<W>(a, b, |x| (x * 4.0).round_ties_even() * 0.25);
            (r, r2, d)
        }
    }

    /// The explicit reductions give the bits of the scalar lane loops they stand for, on every
    /// CPU path (portable `[f64; 8]`, AVX2 `F64x8`), for lengths around multiples of the lanes.
    #[test]
    fn wide_reductions_equal_the_scalar_lane_sums_bitwise() {
        for n in [0usize, 1, 7, 8, 9, 15, 63, 64, 100, 1000] {
            let a = crate::init::det_fill(n, 5, 2.0);
            let b = crate::init::det_fill(n, 6, 1.0);
            let want = (
                sum_by_lanes(&a, |v| (v as f64 - 0.375) * (v as f64 - 0.375)),
                sum2_by_lanes(&a, &b, |x, _| x as f64, |x, y| x as f64 * (y as f64 - 0.375) * 1.5),
                sum_zip_by_lanes(&a, &b, |x, y| ((x * 4.0).round_ties_even() * 0.25) as f64 * y as f64),
            );
            let bits = |v: (f64, (f64, f64), f64)| (v.0.to_bits(), v.1 .0.to_bits(), v.1 .1.to_bits(), v.2.to_bits());
            for path in CpuPath::available() {
                assert_eq!(bits(wide_sums(path, &a, &b)), bits(want), "{path:?}, n = {n}");
            }
        }
    }

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
            let got = sum2_by_lanes(&a, &b, |x, _| x as f64, |x, y| x as f64 * y as f64);
            assert_eq!(got, (sum_lanes(&want2.0), sum_lanes(&want2.1)), "n = {n}");
            let exact: f64 = a.iter().map(|&v| v as f64 * 2.0).sum();
            assert!((sum_by_lanes(&a, |v| v as f64 * 2.0) - exact).abs() <= 1e-12 * (1.0 + exact.abs()));
        }
    }
}
