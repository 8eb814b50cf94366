// `dorefa` element functions for the fused mixture kernels (see edmips-core ops/mixture.cu):
// the CUDA twins of `q` and `ste` in dorefa.rs. prm[0] = 2^k - 1 levels; x is in [0, 1].
__device__ __forceinline__ float edmips_q(float x, const float* prm) {
    return __fsub_rn(__fdiv_rn(__fmul_rn(2.0f, rintf(__fmul_rn(x, prm[0]))), prm[0]), 1.0f);
}
__device__ __forceinline__ float edmips_ste(float x, const float* prm) {
    return 2.0f;
}
