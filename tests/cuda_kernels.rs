//! CUDA kernels: every kernel source compiles with NVRTC (needs libnvrtc, no GPU), and the CUDA
//! kernels match the CPU kernels (needs a GPU). A test that cannot run here is reported as
//! ignored (not passed), with the reason.
//!
//! * CI (no GPU): `LD_LIBRARY_PATH=<toolchain libs> cargo test --release --features cuda --test cuda_kernels`
//!   compiles every registered kernel source.
//! * On a GPU machine the same command also compares CUDA with CPU (`scripts/gpu-check.sh` runs
//!   it there, with the golden parity tests on `EDMIPS_TEST_DEVICE=cuda`).
//!
//! Tolerances, CUDA against CPU on the same input (each test says why):
//! * element ops (mixtures, pooling, batch norm): ~1e-6, a few f32 ulps, because the kernels
//!   are built to round like the CPU (`--fmad=false`, IEEE division, f64 sums);
//! * whole steps of deep quantized networks: loose, because a 1e-7 difference flips quantizer
//!   roundings and the flips cascade (D19); the ResNet-20 tolerances are 3x the CPU's own spread
//!   under such a perturbation (checked on the CPU by `engine_resnet20_spread.rs`).

mod common;

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
        let y = q.mix(xv.as_tensor(), operand, bits, pv.as_tensor(), &[]).unwrap();
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
        let sources = edmips::core::ops::kernels::kernel_sources();
        let names: Vec<&str> = sources.iter().map(|s| s.name).collect();
        for required in ["edmips_batch_norm", "edmips_pool", "gauss", "hwgq"] {
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

    /// Max and average pooling (padding, ceil mode, count_include_pad), forward and backward.
    pub fn pooling() -> Result<(), String> {
        use edmips::core::graph::PoolOpts;
        use edmips::core::ops::{avg_pool::avg_pool2d, max_pool::max_pool2d};
        let dev = device().ok_or("no CUDA device")?;
        let shape = (4, 8, 29, 31);
        let n = 4 * 8 * 29 * 31;
        let x = det_fill(n, 21, 2.0);
        let cases = [PoolOpts::new(3, 2, 1), PoolOpts::new(3, 2, 0).ceil(), PoolOpts::new(3, 1, 1)];
        for (i, opts) in cases.iter().enumerate() {
            for max in [true, false] {
                let run = |d: &Device| {
                    let xv = Var::from_vec(x.clone(), shape, d).unwrap();
                    let y =
                        if max { max_pool2d(xv.as_tensor(), opts) } else { avg_pool2d(xv.as_tensor(), opts) }.unwrap();
                    let g = Tensor::from_vec(det_fill(y.elem_count(), 22, 1.0), y.shape(), d).unwrap();
                    let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                    let h = |t: &Tensor| {
                        t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
                    };
                    (h(&y), h(grads.get(xv.as_tensor()).unwrap()))
                };
                let (y0, g0) = run(&Device::Cpu);
                let (y1, g1) = run(&dev);
                let (ey, eg) = (max_abs(&y0, &y1), max_abs(&g0, &g1));
                println!("pool case {i} max={max}: |dy| {ey:e} |dgrad| {eg:e}");
                if ey > 1e-6 || eg > 1e-5 {
                    return Err(format!("pool case {i} (max={max}): CUDA and CPU differ: y {ey:e}, grad {eg:e}"));
                }
            }
        }
        Ok(())
    }

    /// One search step of the tiny network on CUDA against CPU (same init): logits and every
    /// gradient close (a deep quantized net is chaotic under rounding, D19, so loosely).
    pub fn tiny_search_step() -> Result<(), String> {
        let dev = device().ok_or("no CUDA device")?;
        edmips::link_builtins();
        let cfg =
            edmips::registry::build_config(&edmips::PluginSpec::new("mixtiny_w1234a234")).map_err(|e| e.to_string())?;
        let run = |d: &Device| {
            let net = edmips::core::graph::build_network(&cfg, None, d, 5).unwrap();
            let x = Tensor::from_vec(det_fill(4 * 3 * 16 * 16, 30, 1.0), (4, 3, 16, 16), d).unwrap();
            let y = Tensor::new(&[1u32, 3, 5, 7], d).unwrap();
            let f = net.forward(&x, true, &Default::default()).unwrap();
            let loss = edmips::engine::step::cross_entropy(&f.logits, &y).unwrap();
            let grads = loss.backward().unwrap();
            let h = |t: &Tensor| t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
            let mut gs = Vec::new();
            for p in net.params().iter() {
                if let Some(g) = grads.get(p.var.as_tensor()) {
                    gs.push((p.name.clone(), h(g)));
                }
            }
            (h(&f.logits), gs)
        };
        let (l0, g0) = run(&Device::Cpu);
        let (l1, g1) = run(&dev);
        let el = max_abs(&l0, &l1);
        println!("tiny step: max |dlogits| {el:e}");
        if el > 1e-3 {
            return Err(format!("logits differ by {el:e}"));
        }
        for ((name, a), (_, b)) in g0.iter().zip(&g1) {
            let scale = a.iter().map(|v| v.abs() as f64).fold(1e-3, f64::max);
            if max_abs(a, b) / scale > 1e-2 {
                return Err(format!("gradient of {name} differs: {:e} (scale {scale:e})", max_abs(a, b)));
            }
        }
        Ok(())
    }

    /// Train-mode batch norm, fused CUDA kernels (and the composed fallback) against the fused
    /// CPU op: output, the three gradients and the running statistics. Both sides use the same
    /// f64 formulas in the same order; only the order of the f64 sums differs, which moves the
    /// f32 results by at most an ulp or so: 1e-5 relative plus 1e-5 absolute (values are O(1),
    /// dgamma/dbeta sums of ~7,000 terms are O(10)).
    pub fn batch_norm() -> Result<(), String> {
        use edmips::core::ops::batch_norm::{batch_norm_train, batch_norm_train_composed, BatchNormParams};
        let dev = device().ok_or("no CUDA device")?;
        let (n, c, h, w) = (8usize, 16usize, 29usize, 31usize);
        // Channel offsets, so that the mean matters.
        let x: Vec<f32> = det_fill(n * c * h * w, 51, 2.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v + ((i / (h * w)) % c) as f32 * 0.5)
            .collect();
        let g = det_fill(x.len(), 52, 1.0);
        let run = |d: &Device, composed: bool| {
            let xv = Var::from_vec(x.clone(), (n, c, h, w), d).unwrap();
            let gw = Var::from_vec(det_fill(c, 53, 1.0), c, d).unwrap();
            let gb = Var::from_vec(det_fill(c, 54, 1.0), c, d).unwrap();
            let rm = Var::from_vec(vec![0.5f32; c], c, d).unwrap();
            let rv = Var::from_vec(vec![2.0f32; c], c, d).unwrap();
            let p = BatchNormParams {
                weight: Some(gw.as_tensor()),
                bias: Some(gb.as_tensor()),
                running_mean: &rm,
                running_var: &rv,
                eps: 1e-5,
                momentum: 0.1,
            };
            let y = if composed {
                batch_norm_train_composed(xv.as_tensor(), &p, "bn")
            } else {
                batch_norm_train(xv.as_tensor(), &p, "bn")
            }
            .unwrap();
            let gt = Tensor::from_vec(g.clone(), (n, c, h, w), d).unwrap();
            let grads = y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
            let h = |t: &Tensor| t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
            vec![
                ("y", h(&y)),
                ("dx", h(grads.get(xv.as_tensor()).unwrap())),
                ("dgamma", h(grads.get(gw.as_tensor()).unwrap())),
                ("dbeta", h(grads.get(gb.as_tensor()).unwrap())),
                ("running_mean", h(rm.as_tensor())),
                ("running_var", h(rv.as_tensor())),
            ]
        };
        let cpu = run(&Device::Cpu, false);
        for composed in [false, true] {
            let gpu = run(&dev, composed);
            let path = if composed { "composed" } else { "fused" };
            for ((what, a), (_, b)) in cpu.iter().zip(&gpu) {
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(p, q)| (*p as f64 - *q as f64).abs() / (1.0 + p.abs() as f64))
                    .fold(0.0, f64::max);
                println!("batch norm ({path}) {what}: max |diff|/(1+|cpu|) {worst:e}");
                if worst > 1e-5 || worst.is_nan() {
                    return Err(format!(
                        "batch norm ({path}) {what}: CUDA and CPU differ by {worst:e} (relative to 1+|cpu|)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A search step and a retrain step of ResNet-20 (batch 8, 32×32) on CUDA against the CPU,
    /// from the same initialisation: the loss terms, logits, first layer, and every tensor
    /// after the update, at [`common::resnet20::tolerance`] (3x the CPU's own spread).
    pub fn resnet20_steps() -> Result<(), String> {
        use crate::common::resnet20::{check, diff, run_step, tolerance, CONFIGS};
        let dev = device().ok_or("no CUDA device")?;
        let mut errors = Vec::new();
        for (i, config) in CONFIGS.iter().enumerate() {
            let cpu = run_step(config, &Device::Cpu, 0.0);
            let gpu = run_step(config, &dev, 0.0);
            if let Err(e) = check(&format!("{config} CUDA vs CPU"), &diff(&gpu, &cpu), &tolerance(i)) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
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
            ("pooling_cuda_matches_cpu", gpu::pooling),
            ("tiny_search_step_cuda_matches_cpu", gpu::tiny_search_step),
            ("batch_norm_cuda_matches_cpu", gpu::batch_norm),
            ("resnet20_search_and_retrain_steps_cuda_match_cpu", gpu::resnet20_steps),
        ],
    );
    #[cfg(not(feature = "cuda"))]
    let (reason, tests): (Option<&str>, Vec<(&str, GpuTest)>) = (
        Some("built without --features cuda"),
        vec![
            ("hwgq_mixture_cuda_matches_cpu", || Ok(())),
            ("gauss_mixture_cuda_matches_cpu", || Ok(())),
            ("pooling_cuda_matches_cpu", || Ok(())),
            ("tiny_search_step_cuda_matches_cpu", || Ok(())),
            ("batch_norm_cuda_matches_cpu", || Ok(())),
            ("resnet20_search_and_retrain_steps_cuda_match_cpu", || Ok(())),
        ],
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
