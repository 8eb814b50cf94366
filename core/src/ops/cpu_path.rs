//! Run-time choice of the CPU kernels' instruction set, without requiring
//! `target-cpu=native` at build time.
//!
//! The release binary targets the x86-64 baseline (SSE2: two f64 or four f32 per vector, and
//! rounding through libm). A kernel whose loop is written once as an `#[inline(always)]` body
//! is compiled a second time inside a `#[target_feature(enable = "avx2")]` wrapper, where the
//! same loop vectorises 4×f64 / 8×f32 wide, and the caller picks the version with a
//! [`CpuPath`] detected once per op. No fused multiply-add is enabled, so both versions do the
//! same IEEE operations in the same order: their results are bitwise equal, which the kernels'
//! tests check by running each path.
//!
//! `multiversion!` writes the wrapper and the dispatch
//! for a plain function.

/// Which CPU code path the kernels take: chosen once per call from the processor's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPath {
    /// The portable build (the x86-64 baseline, SSE2, elsewhere whatever the target has).
    Portable,
    /// Loops compiled for AVX2 (8-wide f32, 4-wide f64 vectors, `vroundps` rounding), when the
    /// processor has it.
    Avx2,
}

impl CpuPath {
    /// The fastest path this processor supports.
    pub fn detect() -> CpuPath {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            return CpuPath::Avx2;
        }
        CpuPath::Portable
    }

    /// Every path this processor can run: [`CpuPath::Portable`], then the detected one if it
    /// differs (what the bitwise path tests iterate over).
    pub fn available() -> Vec<CpuPath> {
        let best = CpuPath::detect();
        if best == CpuPath::Portable {
            vec![CpuPath::Portable]
        } else {
            vec![CpuPath::Portable, best]
        }
    }
}

/// Defines `fn name(path: CpuPath, args..) -> R` from a body written once: the body is
/// compiled portable and (on x86-64) inside an AVX2 `#[target_feature]` wrapper, and `path`
/// picks which runs. `Avx2` falls back to the portable body where the processor lacks AVX2,
/// so every `path` is safe to pass.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(path: $crate::ops::cpu_path::CpuPath, $($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($a: $t),*) $(-> $r)? {
                body($($a),*)
            }
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the processor has AVX2 (checked here, the check is cached by std).
                $crate::ops::cpu_path::CpuPath::Avx2 if std::is_x86_feature_detected!("avx2") => unsafe {
                    avx2($($a),*)
                },
                _ => body($($a),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// [`multiversion!`] for a body generic over the f64 lane type `W`
/// ([`Wide`](crate::ops::lanes::Wide)): the portable version runs it with `[f64; 8]`, the AVX2
/// one with [`F64x8`](crate::ops::lanes::avx2::F64x8).
macro_rules! multiversion_wide {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$w:ident>($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(path: $crate::ops::cpu_path::CpuPath, $($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$w: $crate::ops::lanes::Wide>($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($a: $t),*) $(-> $r)? {
                body::<$crate::ops::lanes::avx2::F64x8>($($a),*)
            }
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the processor has AVX2 (checked here, the check is cached by std).
                $crate::ops::cpu_path::CpuPath::Avx2 if std::is_x86_feature_detected!("avx2") => unsafe {
                    avx2($($a),*)
                },
                _ => body::<[f64; $crate::ops::lanes::LANES]>($($a),*),
            }
        }
    };
}
pub(crate) use multiversion_wide;

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        /// A reduction whose vectorised form must equal the scalar one.
        fn lane_sum(xs: &[f32]) -> f64 {
            crate::ops::lanes::sum_by_lanes(xs, |v| (v as f64 - 0.25) * (v as f64 - 0.25))
        }
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let xs = crate::init::det_fill(1000, 7, 3.0);
        let want = lane_sum(CpuPath::Portable, &xs);
        for p in CpuPath::available() {
            assert_eq!(lane_sum(p, &xs).to_bits(), want.to_bits(), "{p:?}");
        }
        // Asking for AVX2 is safe everywhere: it falls back where the processor lacks it.
        assert_eq!(lane_sum(CpuPath::Avx2, &xs).to_bits(), want.to_bits());
    }
}
