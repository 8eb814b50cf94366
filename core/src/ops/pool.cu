// edmips pooling kernels
struct PoolArgs { long long planes; int h, w, oh, ow, kh, kw, sh, sw, ph, pw, cip; };

__device__ __forceinline__ void edmips_win(int o, int k, int s, int p, int len, int* a, int* b, int* ext) {
    int start = o * s - p;
    int endp = min(start + k, len + p);
    *ext = endp - start;
    *b = max(min(start + k, len), 0);
    *a = max(start, 0);
}

__device__ __forceinline__ int edmips_argmax(const float* xp, const PoolArgs& g, int oy, int ox) {
    int y0, y1, x0, x1, e;
    edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &e);
    edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &e);
    float best = __int_as_float(0xff800000);
    int idx = y0 * g.w + x0;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
            float v = xp[iy * g.w + ix];
            if (v > best || v != v) { best = v; idx = iy * g.w + ix; }
        }
    return idx;
}

extern "C" __global__ void maxpool_fwd(const float* __restrict__ x, float* __restrict__ y, PoolArgs g) {
    long long total = g.planes * g.oh * g.ow;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ox = (int)(i % g.ow);
        int oy = (int)((i / g.ow) % g.oh);
        long long p = i / ((long long)g.oh * g.ow);
        const float* xp = x + p * g.h * g.w;
        y[i] = xp[edmips_argmax(xp, g, oy, ox)];
    }
}

// Output windows along one axis that contain input index i: [lo, hi).
__device__ __forceinline__ void edmips_covering(int i, int k, int s, int p, int out, int* lo, int* hi) {
    int t = i + p - k + 1;
    int l = t <= 0 ? 0 : (t + s - 1) / s;
    int h = (i + p) / s + 1;
    *lo = l;
    *hi = min(h, out);
}

extern "C" __global__ void maxpool_bwd(const float* __restrict__ x, const float* __restrict__ gy,
                                       float* __restrict__ dx, PoolArgs g) {
    long long total = g.planes * g.h * g.w;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ix = (int)(i % g.w);
        int iy = (int)((i / g.w) % g.h);
        long long p = i / ((long long)g.h * g.w);
        const float* xp = x + p * g.h * g.w;
        const float* gp = gy + p * g.oh * g.ow;
        int oy0, oy1, ox0, ox1;
        edmips_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy0, &oy1);
        edmips_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox0, &ox1);
        float acc = 0.0f;
        int me = iy * g.w + ix;
        for (int oy = oy0; oy < oy1; ++oy)
            for (int ox = ox0; ox < ox1; ++ox)
                if (edmips_argmax(xp, g, oy, ox) == me) acc = __fadd_rn(acc, gp[oy * g.ow + ox]);
        dx[i] = acc;
    }
}

__device__ __forceinline__ float edmips_divisor(const PoolArgs& g, int oy, int ox) {
    int y0, y1, x0, x1, ey, ex;
    edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &ey);
    edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &ex);
    return g.cip ? (float)(ey * ex) : (float)((y1 - y0) * (x1 - x0));
}

extern "C" __global__ void avgpool_fwd(const float* __restrict__ x, float* __restrict__ y, PoolArgs g) {
    long long total = g.planes * g.oh * g.ow;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ox = (int)(i % g.ow);
        int oy = (int)((i / g.ow) % g.oh);
        long long p = i / ((long long)g.oh * g.ow);
        const float* xp = x + p * g.h * g.w;
        int y0, y1, x0, x1, e;
        edmips_win(oy, g.kh, g.sh, g.ph, g.h, &y0, &y1, &e);
        edmips_win(ox, g.kw, g.sw, g.pw, g.w, &x0, &x1, &e);
        float acc = 0.0f;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) acc = __fadd_rn(acc, xp[iy * g.w + ix]);
        y[i] = __fdiv_rn(acc, edmips_divisor(g, oy, ox));
    }
}

extern "C" __global__ void avgpool_bwd(const float* __restrict__ gy, float* __restrict__ dx, PoolArgs g) {
    long long total = g.planes * g.h * g.w;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int ix = (int)(i % g.w);
        int iy = (int)((i / g.w) % g.h);
        long long p = i / ((long long)g.h * g.w);
        const float* gp = gy + p * g.oh * g.ow;
        int oy0, oy1, ox0, ox1;
        edmips_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy0, &oy1);
        edmips_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox0, &ox1);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; ++oy)
            for (int ox = ox0; ox < ox1; ++ox)
                acc = __fadd_rn(acc, __fdiv_rn(gp[oy * g.ow + ox], edmips_divisor(g, oy, ox)));
        dx[i] = acc;
    }
}
