// edmips fused train-mode batch-norm kernels: the CUDA twin of the CPU op in batch_norm.rs,
// with the same f64 formulas written in the same operation order.
// Assembled by `batch_norm::cuda_source`: a prelude defines EDMIPS_BLOCK (= kernels::CUDA_BLOCK,
// the block size of every launch).
//
// Per-channel statistics over (N, H, W) are accumulated in f64 in a fixed order: channel c is
// split into `split` chunks of `chunk` values (both fixed by the shape alone), each chunk is
// summed by one block with a fixed tree, and the chunk sums are added in chunk order by one
// thread. The results do not change from run to run or with the GPU.
//
// Forward:  bn_partial_stats(mode 0) -> bn_finalize(mode 0)   mean
//           bn_partial_stats(mode 1) -> bn_finalize(mode 1)   biased variance, f32 coefficients
//           bn_apply                                          y = x * scale + shift
// Backward: bn_bwd_partial -> bn_bwd_finalize                 Σ g, Σ g·x̂ per channel
//           bn_bwd_dx                                         dx
struct BnArgs { long long n; long long c; long long hw; long long split; long long chunk; double eps; };

// Flat index of the j-th value (0 <= j < n*hw) of channel ch in an NCHW tensor.
__device__ __forceinline__ long long bn_at(const BnArgs& a, long long ch, long long j) {
    long long i = j / a.hw;
    return (i * a.c + ch) * a.hw + (j - i * a.hw);
}

// Block-wide sum of v with a fixed tree; every thread gets the result. sh: EDMIPS_BLOCK doubles.
__device__ double bn_block_sum(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = EDMIPS_BLOCK / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

// Grid (split, C). Block (s, c) sums chunk s of channel c: mode 0 the values, mode 1 the squared
// deviations from the mean st[c]. partial[c * split + s].
extern "C" __global__ void bn_partial_stats(const float* __restrict__ x, const double* __restrict__ st,
                                            double* __restrict__ partial, BnArgs a, int mode) {
    __shared__ double sh[EDMIPS_BLOCK];
    long long ch = blockIdx.y, s = blockIdx.x;
    long long count = a.n * a.hw;
    long long start = s * a.chunk;
    long long end = min(start + a.chunk, count);
    double mu = mode ? st[ch] : 0.0;
    double acc = 0.0;
    for (long long j = start + threadIdx.x; j < end; j += EDMIPS_BLOCK) {
        double v = (double)x[bn_at(a, ch, j)];
        if (mode) {
            double d = v - mu;
            acc += d * d;
        } else {
            acc += v;
        }
    }
    double t = bn_block_sum(acc, sh);
    if (threadIdx.x == 0) partial[ch * a.split + s] = t;
}

// One thread per channel. Mode 0: st[c] = mean. Mode 1: the biased variance; writes the mean
// and variance as f32 after the n*c*hw outputs of `out`, and the f32 coefficients
// coef[c] = w / sqrt(var + eps), coef[C + c] = b - mean * scale (computed in f64, as the CPU).
extern "C" __global__ void bn_finalize(const double* __restrict__ partial, double* __restrict__ st,
                                       const float* __restrict__ w, const float* __restrict__ b,
                                       float* __restrict__ out, float* __restrict__ coef, BnArgs a, int mode) {
    long long ch = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= a.c) return;
    double s = 0.0;
    for (long long k = 0; k < a.split; ++k) s += partial[ch * a.split + k];
    double m = (double)(a.n * a.hw);
    if (mode == 0) {
        st[ch] = s / m;
        return;
    }
    double mean = st[ch];
    double var = s / m;
    double scale = (double)w[ch] / sqrt(var + a.eps);
    coef[ch] = (float)scale;
    coef[a.c + ch] = (float)((double)b[ch] - mean * scale);
    long long total = a.n * a.c * a.hw;
    out[total + ch] = (float)mean;
    out[total + a.c + ch] = (float)var;
}

// y[i] = x[i] * scale[c] + shift[c] in f32 (two roundings, no FMA: as the CPU).
extern "C" __global__ void bn_apply(const float* __restrict__ x, const float* __restrict__ coef,
                                    float* __restrict__ y, BnArgs a) {
    long long total = a.n * a.c * a.hw;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        long long ch = (i / a.hw) % a.c;
        y[i] = __fadd_rn(__fmul_rn(x[i], coef[ch]), coef[a.c + ch]);
    }
}

// aux = [mean (C), biased var (C), weight (C)] in f32, as the forward saved them.
__device__ __forceinline__ double bn_inv(const float* aux, const BnArgs& a, long long ch) {
    return 1.0 / sqrt((double)aux[a.c + ch] + a.eps);
}

// Grid (split, C): per chunk, Σ g and Σ g·(x - mean)·inv in f64. partial[(c * split + s) * 2 + {0, 1}].
extern "C" __global__ void bn_bwd_partial(const float* __restrict__ x, const float* __restrict__ g,
                                          const float* __restrict__ aux, double* __restrict__ partial, BnArgs a) {
    __shared__ double sh[EDMIPS_BLOCK];
    long long ch = blockIdx.y, s = blockIdx.x;
    long long count = a.n * a.hw;
    long long start = s * a.chunk;
    long long end = min(start + a.chunk, count);
    double inv = bn_inv(aux, a, ch);
    double mu = (double)aux[ch];
    double sg = 0.0, sgx = 0.0;
    for (long long j = start + threadIdx.x; j < end; j += EDMIPS_BLOCK) {
        long long e = bn_at(a, ch, j);
        double gv = (double)g[e];
        sg += gv;
        sgx += gv * ((double)x[e] - mu) * inv;
    }
    double t1 = bn_block_sum(sg, sh);
    double t2 = bn_block_sum(sgx, sh);
    if (threadIdx.x == 0) {
        partial[(ch * a.split + s) * 2] = t1;
        partial[(ch * a.split + s) * 2 + 1] = t2;
    }
}

// One thread per channel: st[2c] = Σ g, st[2c + 1] = Σ g·x̂ (chunks in order); after the n*c*hw
// values of dx, `out` holds dweight = Σ g·x̂ and dbias = Σ g as f32.
extern "C" __global__ void bn_bwd_finalize(const double* __restrict__ partial, double* __restrict__ st,
                                           float* __restrict__ out, BnArgs a) {
    long long ch = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= a.c) return;
    double sg = 0.0, sgx = 0.0;
    for (long long k = 0; k < a.split; ++k) {
        sg += partial[(ch * a.split + k) * 2];
        sgx += partial[(ch * a.split + k) * 2 + 1];
    }
    st[2 * ch] = sg;
    st[2 * ch + 1] = sgx;
    long long total = a.n * a.c * a.hw;
    out[total + ch] = (float)sgx;
    out[total + a.c + ch] = (float)sg;
}

// dx = w·inv/m · (m·g - Σg - x̂·Σg·x̂) in f64, rounded once to f32.
extern "C" __global__ void bn_bwd_dx(const float* __restrict__ x, const float* __restrict__ g,
                                     const float* __restrict__ aux, const double* __restrict__ st,
                                     float* __restrict__ out, BnArgs a) {
    long long total = a.n * a.c * a.hw;
    long long stride = (long long)gridDim.x * blockDim.x;
    double m = (double)(a.n * a.hw);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        long long ch = (i / a.hw) % a.c;
        double inv = bn_inv(aux, a, ch);
        double mu = (double)aux[ch];
        double k = (double)aux[2 * a.c + ch] * inv / m;
        double xh = ((double)x[i] - mu) * inv;
        out[i] = (float)(k * (m * (double)g[i] - st[2 * ch] - xh * st[2 * ch + 1]));
    }
}
