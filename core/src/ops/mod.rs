//! Custom tensor ops: what candle lacks or does slowly, with CPU kernels and (with the `cuda`
//! feature) CUDA kernels compiled by NVRTC.
//!
//! * [`mixture`]: the fused quantizer mixture `Σ_i p_i · Q_i(x)` (forward, and dx/dp backward).
//! * [`conv`]: convolution with per-side padding.
//! * [`stats`]: detached statistics (the unbiased std of a weight tensor).

pub mod conv;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod mixture;
pub mod stats;
