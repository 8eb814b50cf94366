//! CUDA plumbing shared by our custom ops: NVRTC compilation with our options (cached per
//! module), contiguous device views, and the grid size. Each op launches its own kernels
//! beside its CPU code. Compiled only with the `cuda` feature.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::{CudaStorage, Layout};

use super::kernels::CUDA_BLOCK;

/// NVRTC options for every edmips kernel: no FMA contraction and IEEE division and square root,
/// so GPU results round like the CPU kernels.
pub fn compile_options() -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        ..Default::default()
    }
}

/// Compiles `src` to PTX text with [`compile_options`]; errors carry the NVRTC log.
pub fn compile(name: &str, src: &str) -> Result<String, String> {
    compile_ptx_with_opts(src, compile_options())
        .map(|p| p.to_src())
        .map_err(|e| format!("NVRTC failed to compile `{name}`: {e:?}"))
}

pub(crate) fn ptx_for(name: &'static str, src: impl FnOnce() -> String) -> candle_core::Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().map_err(|_| candle_core::Error::Msg("edmips PTX cache poisoned".into()))?;
    if let Some(p) = guard.get(name) {
        return Ok(p.clone());
    }
    let ptx = compile(name, &src()).map_err(candle_core::Error::Msg)?;
    guard.insert(name, ptx.clone());
    Ok(ptx)
}

pub(crate) fn slice_f32<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let full = s.as_cuda_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(full.slice(a..b)),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// Blocks for a grid-stride loop over `n` elements (at most 1024 blocks of [`CUDA_BLOCK`]).
pub(crate) fn grid(n: usize) -> u32 {
    (n.div_ceil(CUDA_BLOCK as usize)).clamp(1, 1024) as u32
}
