// `hwgq` element functions for the fused mixture kernels (see edmips-core ops/mixture.cu):
// the CUDA twins of `q` and `ste` in hwgq.rs, rounding the same way.
__device__ __forceinline__ float edmips_q(float x, const float* prm) {
    if (prm[2] != 0.0f) return x < 0.0f ? 0.0f : x;
    float c = x < 0.0f ? 0.0f : (x > prm[1] ? prm[1] : x);
    return __fmul_rn(rintf(__fdiv_rn(c, prm[0])), prm[0]);
}
__device__ __forceinline__ float edmips_ste(float x, const float* prm) {
    if (prm[2] != 0.0f) return x >= 0.0f ? 1.0f : 0.0f;
    return (x >= 0.0f && x <= prm[1]) ? 1.0f : 0.0f;
}
