// `uniform_act` element functions (uniform_act.rs): the CUDA twins of its
// `q` and `ste`, pasted by edmips-core in front of the fused mixture kernels.
__device__ __forceinline__ float edmips_q(float x, const float* p) {
    float c = x < 0.0f ? 0.0f : (x > p[1] ? p[1] : x);
    return __fmul_rn(rintf(__fdiv_rn(c, p[0])), p[0]);
}
__device__ __forceinline__ float edmips_ste(float x, const float* p) {
    return (x >= 0.0f && x <= p[1]) ? 1.0f : 0.0f;
}
