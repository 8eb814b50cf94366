//! CUDA plumbing for our custom ops: NVRTC compilation (cached per module), and the launches
//! of the fused mixture kernels. Compiled only with the `cuda` feature.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Shape};

use super::mixture::{cuda_source, ElementQuantizer, MAX_BRANCHES};

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

fn module_name<Q: ElementQuantizer>() -> String {
    format!("edmips_mix_{}", Q::NAME)
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

pub(crate) const BLOCK: u32 = 256;

pub(crate) fn grid(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 1024) as u32
}

/// Launches the forward mixture kernel.
pub(crate) fn mixture_fwd<Q: ElementQuantizer>(
    k: usize,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    debug_assert!(k <= MAX_BRANCHES);
    let dev = &s1.device;
    let x = slice_f32(s1, l1, "x")?;
    let pp = slice_f32(s2, l2, "weights")?;
    let n = l1.shape().elem_count();
    let out = dev.alloc_zeros::<f32>(n)?;
    let ptx = ptx_for(Q::NAME, cuda_source::<Q>)?;
    let f = dev.get_or_load_custom_func("mix_fwd", &module_name::<Q>(), &ptx)?;
    let cfg = LaunchConfig { grid_dim: (grid(n), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    let (n64, ki, np) = (n as u64, k as i32, Q::PARAMS as i32);
    let mut b = f.builder();
    b.arg(&x);
    b.arg(&pp);
    b.arg(&out);
    b.arg(&n64);
    b.arg(&ki);
    b.arg(&np);
    unsafe { b.launch(cfg) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), l1.shape().clone()))
}

/// Launches the backward mixture kernels: `[dx (n), dp (k)]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mixture_bwd<Q: ElementQuantizer>(
    k: usize,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let dev = &s1.device;
    let x = slice_f32(s1, l1, "x")?;
    let pp = slice_f32(s2, l2, "weights")?;
    let g = slice_f32(s3, l3, "gradient")?;
    let n = l1.shape().elem_count();
    let blocks = grid(n);
    let out = dev.alloc_zeros::<f32>(n + k)?;
    let partial = dev.alloc_zeros::<f64>(blocks as usize * k)?;
    let ptx = ptx_for(Q::NAME, cuda_source::<Q>)?;
    let module = module_name::<Q>();
    let (n64, ki, np, nb) = (n as u64, k as i32, Q::PARAMS as i32, blocks as i32);

    let f = dev.get_or_load_custom_func("mix_bwd", &module, &ptx)?;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    let mut b = f.builder();
    b.arg(&x);
    b.arg(&pp);
    b.arg(&g);
    b.arg(&out);
    b.arg(&partial);
    b.arg(&n64);
    b.arg(&ki);
    b.arg(&np);
    unsafe { b.launch(cfg) }.w()?;

    let f = dev.get_or_load_custom_func("mix_reduce", &module, &ptx)?;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (MAX_BRANCHES as u32, 1, 1), shared_mem_bytes: 0 };
    let mut b = f.builder();
    b.arg(&partial);
    b.arg(&out);
    b.arg(&n64);
    b.arg(&ki);
    b.arg(&nb);
    unsafe { b.launch(cfg) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(n + k)))
}
