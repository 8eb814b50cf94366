// edmips fused quantizer-mixture kernels, shared by every ElementQuantizer family.
// Assembled by `mixture::cuda_source`: a prelude defines EDMIPS_MAXK (= MAX_BRANCHES) and
// EDMIPS_BLOCK (= kernels::CUDA_BLOCK, the block size every launch uses), then the family's
// `edmips_q` / `edmips_ste` element functions, then this file.
extern "C" __global__ void mix_fwd(const float* __restrict__ x, const float* __restrict__ pp,
                                   float* __restrict__ out, unsigned long long n, int k, int np) {
    const float* prm = pp + k;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float xv = x[i];
        float acc = 0.0f;
        for (int b = 0; b < k; ++b) acc = __fadd_rn(acc, __fmul_rn(pp[b], edmips_q(xv, prm + b * np)));
        out[i] = acc;
    }
}

extern "C" __global__ void mix_bwd(const float* __restrict__ x, const float* __restrict__ pp,
                                   const float* __restrict__ g, float* __restrict__ out,
                                   double* __restrict__ partial, unsigned long long n, int k, int np) {
    __shared__ double sh[EDMIPS_BLOCK];
    double acc[EDMIPS_MAXK];
    for (int b = 0; b < EDMIPS_MAXK; ++b) acc[b] = 0.0;
    const float* prm = pp + k;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float xv = x[i];
        float gv = g[i];
        float s = 0.0f;
        for (int b = 0; b < k; ++b) {
            const float* pb = prm + b * np;
            s = __fadd_rn(s, __fmul_rn(pp[b], edmips_ste(xv, pb)));
            acc[b] += (double)edmips_q(xv, pb) * (double)gv;
        }
        out[i] = __fmul_rn(gv, s);
    }
    for (int b = 0; b < k; ++b) {
        sh[threadIdx.x] = acc[b];
        __syncthreads();
        for (int w = EDMIPS_BLOCK / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) partial[(unsigned long long)blockIdx.x * k + b] = sh[0];
        __syncthreads();
    }
}

extern "C" __global__ void mix_reduce(const double* __restrict__ partial, float* __restrict__ out,
                                      unsigned long long n, int k, int nblocks) {
    int b = threadIdx.x;
    if (b < k) {
        double s = 0.0;
        for (int j = 0; j < nblocks; ++j) s += partial[(unsigned long long)j * k + b];
        out[n + b] = (float)s;
    }
}
