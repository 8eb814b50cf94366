//! The fused mixture kernels' CPU paths: the AVX2 build of the loops (chosen at run time) gives
//! bitwise the same values and gradients as the portable build and as the element-by-element
//! loop they replaced, for every built-in quantizer family, one branch and several, and ragged
//! chunk tails.

use edmips::core::ops::mixture::{cpu_backward_on, cpu_forward_on, cpu_reference, CpuPath, ElementQuantizer, CHUNK};
use edmips::plugins::quant::{dorefa::DorefaElement, gauss::GaussElement, hwgq::HwgqElement};

fn check<Q: ElementQuantizer>(p: &[f32], prm: &[f32]) {
    let n = 2 * CHUNK + 1001;
    // Values on both sides of every rounding tie and clip edge, and exact ties.
    let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.0137).sin() * 3.0 + if i % 97 == 0 { 0.5 } else { 0.0 }).collect();
    // Signed zeros among the gradients (the sign of a zero product must match too).
    let g: Vec<f32> = (0..n).map(|i| if i % 89 == 0 { -0.0 } else { ((i as f32) * 0.29).cos() }).collect();
    let (ry, rdx, rdp) = cpu_reference::<Q>(&x, p, prm, &g);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for path in [CpuPath::Portable, CpuPath::detect()] {
        let mut y = vec![0f32; n];
        cpu_forward_on::<Q>(path, &x, p, prm, &mut y);
        let mut dx = vec![0f32; n];
        let dp = cpu_backward_on::<Q>(path, &x, p, prm, &g, &mut dx);
        assert_eq!(bits(&y), bits(&ry), "{} {path:?}: forward", Q::NAME);
        assert_eq!(bits(&dx), bits(&rdx), "{} {path:?}: dx", Q::NAME);
        assert_eq!(bits(&dp), bits(&rdp), "{} {path:?}: dp", Q::NAME);
    }
}

#[test]
fn every_cpu_path_matches_the_element_loop_bitwise() {
    // HWGQ branches [step, thr, full]: 2, 3 and 4 bits and the ReLU form.
    check::<HwgqElement>(&[0.1, 0.2, 0.3, 0.4], &[0.538, 1.614, 0.0, 0.3, 2.1, 0.0, 0.1, 1.5, 0.0, 1.0, 0.0, 1.0]);
    // Gaussian branches [step, max level].
    check::<GaussElement>(&[0.25, 0.25, 0.5], &[0.9957, 0.49785, 0.586, 1.4651, 0.3352, 2.346]);
    check::<DorefaElement>(&[0.5, 0.5], &[3.0, 15.0]);
    // One branch, a retrained layer's mixture: the backward's single fused loop.
    check::<HwgqElement>(&[1.0], &[0.538, 1.614, 0.0]);
    check::<GaussElement>(&[1.0], &[0.9957, 0.49785]);
    println!("fastest path here: {:?}", CpuPath::detect());
}
