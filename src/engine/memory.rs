//! Allocator settings for the training loop (decisions F9).
//!
//! A CPU training step allocates and frees the same large buffers every step: activations,
//! gradients, im2col columns, candle's element-wise outputs. With glibc's default settings a
//! freed block above the dynamic mmap threshold goes back to the kernel (`munmap`, or a trim of
//! the heap top), and the next step's allocation of the same size faults every page in again and
//! has the kernel clear it. On the 2-core development machine `perf record` of a ResNet-20 retrain
//! step put 26% of the time in the kernel's `clear_page_erms` under those page faults.
//!
//! [`tune_allocator`] keeps that memory in the process instead: every block comes from the heap
//! (glibc's `mmap` for large blocks is switched off, `M_MMAP_MAX = 0`; before that, blocks up to
//! 32 MiB, the largest mmap threshold glibc accepts, did and larger ones were still mapped and
//! unmapped every step), the heap is not trimmed below 2 GiB of free top, and it grows in 64 MiB
//! steps. Peak RSS is unchanged (the live set is what it was; the
//! heap is simply not given back between steps). It changes no value: the allocator decides only
//! where memory lives.
//!
//! It is applied once, at the start of [`crate::cli::main_with`], on Linux with glibc only, and not
//! when the user tunes the allocator themselves (any of the `MALLOC_*_` variables glibc reads, or
//! `GLIBC_TUNABLES`) or sets `EDMIPS_MALLOC_DEFAULTS=1`.

use std::sync::OnceLock;

/// Heap blocks up to this size are served from the heap (glibc's maximum mmap threshold on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap kept before glibc trims it (2 GiB − 1, the largest C int).
pub const TRIM_THRESHOLD: usize = i32::MAX as usize;
/// Extra memory the heap grows by when it must grow.
pub const TOP_PAD: usize = 64 << 20;
/// Most blocks glibc may serve with `mmap` at once: none, so blocks above [`MMAP_THRESHOLD`]
/// come from the heap too (a ResNet-18 batch-32 step maps, faults in, clears and unmaps its
/// 100 MB stem activations and their gradients otherwise: decisions F9).
pub const MMAP_MAX: usize = 0;

// mallopt takes a C int, and glibc refuses an mmap threshold above 32 MiB.
const _: () = assert!(TRIM_THRESHOLD <= i32::MAX as usize);
const _: () = assert!(TOP_PAD <= i32::MAX as usize);
const _: () = assert!(MMAP_THRESHOLD <= 32 << 20);

/// The environment variables that mean the user tunes glibc's allocator, or asks for its defaults.
pub const USER_VARIABLES: [&str; 6] = [
    "EDMIPS_MALLOC_DEFAULTS",
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// What [`tune_allocator`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// The settings above were applied.
    Applied,
    /// Left at the defaults because the user set this variable.
    LeftToUser(&'static str),
    /// Not a glibc target, or glibc refused a setting: nothing changed (or only part of it).
    Unsupported,
}

/// The decision, from whether each environment variable is set: `Some(var)` when `var` is set
/// (the user's own tuning wins), `None` when the settings should be applied.
pub fn user_override(is_set: impl Fn(&str) -> bool) -> Option<&'static str> {
    USER_VARIABLES.into_iter().find(|v| is_set(v))
}

/// Whether `var` is set in this process's environment.
fn env_is_set(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

/// Applies the allocator settings once per process and returns what was done (later calls
/// return the first call's result).
pub fn tune_allocator() -> AllocatorTuning {
    static DONE: OnceLock<AllocatorTuning> = OnceLock::new();
    DONE.get_or_init(|| match user_override(env_is_set) {
        Some(var) => AllocatorTuning::LeftToUser(var),
        None => apply(),
    })
    .clone()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> AllocatorTuning {
    // SAFETY: mallopt only changes allocator parameters; it is called before the run allocates
    // its buffers, and glibc serialises it against concurrent allocation.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int) == 1
            && libc::mallopt(libc::M_MMAP_MAX, MMAP_MAX as libc::c_int) == 1
    };
    if ok {
        AllocatorTuning::Applied
    } else {
        AllocatorTuning::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_tuning_wins() {
        assert_eq!(user_override(|_| false), None);
        for var in USER_VARIABLES {
            assert_eq!(user_override(|v| v == var), Some(var), "{var} set must leave the allocator alone");
        }
        assert_eq!(user_override(|v| v == "MALLOC_ARENA_MAX"), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn applies_on_glibc_and_is_idempotent() {
        let first = tune_allocator();
        if user_override(env_is_set).is_none() {
            assert_eq!(first, AllocatorTuning::Applied);
        }
        assert_eq!(tune_allocator(), first);
        // Memory still works after the change, across the threshold.
        let big = vec![1u8; MMAP_THRESHOLD + 1];
        let small = vec![2u8; MMAP_THRESHOLD - 4096];
        assert_eq!(big[MMAP_THRESHOLD] as usize + small[0] as usize, 3);
    }
}
