//! CUDA kernels: every kernel source compiles with NVRTC (needs libnvrtc, no GPU), and the CUDA
//! kernels match the CPU kernels (needs a GPU). A test that cannot run here is reported as
//! ignored (not passed), with the reason.
//!
//! * CI (no GPU): `LD_LIBRARY_PATH=<toolchain libs> cargo test --release --features cuda --test cuda_kernels`
//!   compiles every registered kernel source.
//! * On a GPU machine the same command also compares CUDA with CPU.

use libtest_mimic::{Arguments, Trial};

#[cfg(feature = "cuda")]
mod gpu {
    use edmips::core::candle::{Device, Tensor, Var};
    use edmips::core::init::det_fill;
    use edmips::plugins::{Gauss, Hwgq};
    use edmips::{Operand, Quantizer};

    pub fn device() -> Option<Device> {
        // The build toolchain ships a stub libcuda: only trust a machine with the real driver.
        if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
            return None;
        }
        Device::new_cuda(0).ok()
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
    }

    /// Forward, dx and dp of a quantizer mixture on `dev`.
    fn mix_on(
        dev: &Device,
        q: &dyn Quantizer,
        operand: Operand,
        bits: &[u32],
        x: &[f32],
        p: &[f32],
        g: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let xv = Var::from_vec(x.to_vec(), x.len(), dev).unwrap();
        let pv = Var::from_vec(p.to_vec(), p.len(), dev).unwrap();
        let y = q.mix(xv.as_tensor(), operand, bits, pv.as_tensor()).unwrap();
        let gt = Tensor::from_vec(g.to_vec(), g.len(), dev).unwrap();
        let grads = y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
        let h = |t: &Tensor| t.to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        (h(&y), h(grads.get(xv.as_tensor()).unwrap()), h(grads.get(pv.as_tensor()).unwrap()))
    }

    fn compare(q: &dyn Quantizer, operand: Operand, bits: &[u32], p: &[f32]) -> Result<(), String> {
        let dev = device().ok_or("no CUDA device")?;
        let n = 1_000_003;
        let x = det_fill(n, 11, 3.0);
        let g = det_fill(n, 12, 1.0);
        let (y0, dx0, dp0) = mix_on(&Device::Cpu, q, operand, bits, &x, p, &g);
        let (y1, dx1, dp1) = mix_on(&dev, q, operand, bits, &x, p, &g);
        let (ey, edx) = (max_abs(&y0, &y1), max_abs(&dx0, &dx1));
        let edp = dp0.iter().zip(&dp1).map(|(a, b)| ((a - b).abs() / a.abs().max(1.0)) as f64).fold(0.0, f64::max);
        println!("{}: max |dy| {ey:e}, max |ddx| {edx:e}, max rel |ddp| {edp:e}", q.id());
        if ey > 1e-6 || edx > 1e-6 || edp > 1e-5 {
            return Err(format!("{}: CUDA and CPU differ: y {ey:e}, dx {edx:e}, dp {edp:e}", q.id()));
        }
        Ok(())
    }

    /// Compiles every registered CUDA source (ours and any linked plugin's) with NVRTC.
    pub fn nvrtc_compiles_every_kernel() -> Result<(), String> {
        edmips::link_builtins();
        let sources = edmips::core::ops::mixture::kernel_sources();
        let names: Vec<&str> = sources.iter().map(|s| s.name).collect();
        for required in ["gauss", "hwgq"] {
            if !names.contains(&required) {
                return Err(format!("kernel source `{required}` is not registered (found {names:?})"));
            }
        }
        for s in sources {
            edmips::core::ops::cuda::compile(s.name, &(s.source)())?;
            println!("compiled `{}`", s.name);
        }
        Ok(())
    }

    pub fn hwgq_mixture() -> Result<(), String> {
        compare(&Hwgq, Operand::Activation, &[2, 3, 4, 32], &[0.1, 0.2, 0.3, 0.4])
    }

    pub fn gauss_mixture() -> Result<(), String> {
        compare(&Gauss, Operand::Weight, &[1, 2, 3, 4], &[0.4, 0.3, 0.2, 0.1])
    }
}

/// A GPU comparison test.
type GpuTest = fn() -> Result<(), String>;

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    #[cfg(feature = "cuda")]
    trials.push(Trial::test("nvrtc_compiles_every_kernel", || gpu::nvrtc_compiles_every_kernel().map_err(Into::into)));
    #[cfg(not(feature = "cuda"))]
    trials.push(Trial::test("nvrtc_compiles_every_kernel", || Ok(())).with_ignored_flag(true));
    #[cfg(feature = "cuda")]
    let (reason, tests): (Option<&str>, Vec<(&str, GpuTest)>) = (
        if gpu::device().is_some() { None } else { Some("no CUDA GPU on this machine") },
        vec![
            ("hwgq_mixture_cuda_matches_cpu", gpu::hwgq_mixture),
            ("gauss_mixture_cuda_matches_cpu", gpu::gauss_mixture),
        ],
    );
    #[cfg(not(feature = "cuda"))]
    let (reason, tests): (Option<&str>, Vec<(&str, GpuTest)>) = (
        Some("built without --features cuda"),
        vec![("hwgq_mixture_cuda_matches_cpu", || Ok(())), ("gauss_mixture_cuda_matches_cpu", || Ok(()))],
    );
    if let Some(r) = reason {
        eprintln!("cuda_kernels: every test ignored: {r}");
    }
    trials.extend(
        tests
            .into_iter()
            .map(|(name, f)| Trial::test(name, move || f().map_err(Into::into)).with_ignored_flag(reason.is_some())),
    );
    libtest_mimic::run(&args, trials).exit();
}
