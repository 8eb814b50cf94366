//! The registry of CUDA kernel sources and the constants they share with Rust.
//!
//! Every op's CUDA C lives in a `.cu` file beside the op (`include_str!`); constants a kernel
//! shares with its launch code (block size, branch count) are defined here or in the op's
//! Rust file and prepended to the source as `#define`s, so each exists once. Each source is
//! registered with [`register_kernel_source!`](crate::register_kernel_source) so that the
//! NVRTC check test (`tests/cuda_kernels.rs`) compiles all of them, also on machines without
//! a GPU.

/// Threads per block of every edmips kernel launch (`EDMIPS_BLOCK` in the CUDA sources).
pub const CUDA_BLOCK: u32 = 256;

/// A CUDA source known to edmips, compiled by the NVRTC check test.
pub struct KernelSource {
    /// Module name.
    pub name: &'static str,
    /// Produces the full source.
    pub source: fn() -> String,
}

inventory::collect!(KernelSource);

/// Every registered CUDA kernel source.
pub fn kernel_sources() -> Vec<&'static KernelSource> {
    let mut v: Vec<_> = inventory::iter::<KernelSource>.into_iter().collect();
    v.sort_by_key(|k| k.name);
    v
}

/// Registers a CUDA source so the NVRTC check test compiles it. Two forms:
///
/// * `register_kernel_source!(MyElementQuantizer);`: the mixture kernels of an
///   [`ElementQuantizer`](super::mixture::ElementQuantizer) type;
/// * `register_kernel_source!(name: "module", source: a_fn_returning_string);`: any other
///   kernel source (the pooling kernels use this).
#[macro_export]
macro_rules! register_kernel_source {
    (name: $name:expr, source: $src:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::ops::kernels::KernelSource { name: $name, source: $src }
        }
    };
    ($q:ty) => {
        $crate::inventory::submit! {
            $crate::ops::kernels::KernelSource {
                name: <$q as $crate::ops::mixture::ElementQuantizer>::NAME,
                source: $crate::ops::mixture::cuda_source::<$q>,
            }
        }
    };
}
