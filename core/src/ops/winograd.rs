//! Winograd F(2×2, 3×3) for the CPU convolution's 3×3, stride-1, padding-1 layers: the forward,
//! the input gradient and the weight gradient (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", CVPR 2016).
//!
//! Each 2×2 output tile is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the 4×4 input patch `d` that
//! covers it, so the 3×3 convolution of a `C → O` layer becomes, per tile, 16 element-wise
//! products summed over channels: 16 GEMMs `M_ξ[O, P] = U_ξ[O, C] · V_ξ[C, P]` over `P` tiles,
//! 4·O·C multiply-adds per tile where im2col + GEMM spends 9·O·C per output pixel, i.e. 36·O·C
//! per four pixels: 2.25× fewer, and no im2col buffer (decisions F12).
//!
//! * **Forward:** input transform (`V`), the 16 GEMMs, output transform.
//! * **Input gradient:** the same forward on `dY` with the kernel flipped and its two channel
//!   axes swapped (`dX = conv(dY, W')`, `W'[c][o][i][j] = W[o][c][2-i][2-j]`, padding 1).
//! * **Weight gradient:** the adjoint of the forward in `U`: `dU_ξ = Σ_P (A dY Aᵀ)_ξ · V_ξᵀ`,
//!   then `dW = Gᵀ dU G` per kernel.
//!
//! The tiles of whole samples are processed in chunks whose size depends on the shapes only
//! (`Wino::samples_per_chunk`); the weight gradient sums its chunks in groups fixed by the
//! shapes and adds the groups in order, so every result is independent of the thread count.
//!
//! Each input plane is first copied into a zero-padded, column-deinterleaved buffer (even and
//! odd padded columns apart), so the four patch columns of 8 neighbouring tiles are four
//! contiguous loads and the transforms vectorise as plain `[f32; 8]` arithmetic.

use rayon::prelude::*;

use super::conv_cpu::matmul;
use super::short_k_gemm;

/// Most tile columns one chunk's GEMMs take (the `V` and `M` buffers are `16 × C × cols`): 256
/// keeps a 32-channel chunk's `V` at 512 KiB, in the core's cache; 1024 made every layer slower.
const MAX_COLS: usize = 256;
/// Fewest tile columns a chunk takes where the batch allows it: narrower products are
/// dominated by packing the `U_ξ` operand.
const MIN_COLS: usize = 64;
/// The batch is split into at least this many chunks where [`MIN_COLS`] allows (parallelism).
const MIN_CHUNKS: usize = 8;
/// Most groups the weight gradient's chunks are summed in.
const DW_GROUPS: usize = 8;
/// Bytes the per-group `dU` partial sums (`16 × C × O` each) may take together.
const DW_PARTIAL_BYTES: usize = 32 << 20;
/// Lanes of the vectorised transforms.
const L: usize = 8;
/// Floats between the end of one `ξ` block of `V`, `M` or `dM` and the start of the next.
/// Without them the 16 blocks of a 16-channel, 256-tile chunk lie exactly 16 KiB apart, so
/// the transforms' 16 store (or load) streams share one set of the 8-way L1 cache and evict
/// each other: ResNet-20's 16- and 32-channel layers spent more time in the input transform
/// than in the products (decisions F12).
const XI_PAD: usize = 16;

/// Floats from one `ξ` block of `V` (`rows` = C), `M` or `dM` (`rows` = O) to the next, for
/// chunks of `pc` tiles: the `rows × pc` block and [`XI_PAD`].
fn xi_stride(rows: usize, pc: usize) -> usize {
    rows * pc + XI_PAD
}
/// Fewest tiles across a row for which Winograd pays ([`Wino::pays`]): three quarters of a lane
/// group, planes at least 11 wide.
const MIN_TILE_COLS: usize = 6;
/// Fewest channels along the products' `K` axis (the forward's input channels, the input
/// gradient's output channels, the weight gradient's input channels) for which Winograd pays
/// on every plane it takes ([`Wino::pays`]).
const MIN_CHANNELS: usize = 32;
/// Fewer channels, down to this, still pay in the forward and the input gradient where every
/// 8-tile group of the transforms is full (tiles across a multiple of [`L`]), see
/// [`Wino::pays`].
const MIN_CHANNELS_FULL_LANES: usize = 16;

/// The three convolutions of a layer's training step, which [`Wino::pays`] gates one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// `y = conv(x, W)`.
    Forward,
    /// `dx = conv(gy, W')`.
    InputGrad,
    /// `dW` from `x` and `gy`.
    WeightGrad,
}

/// The geometry of a 3×3, stride-1, padding-1 convolution `C → O` on `N × C × H × W`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wino {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    /// Tile rows and columns (`⌈H/2⌉`, `⌈W/2⌉`).
    th: usize,
    tw: usize,
}

impl Wino {
    /// The geometry of `x[n, c, h, w] ⊛ W[o, c, 3, 3]`.
    pub(super) fn new(n: usize, c: usize, h: usize, w: usize, o: usize) -> Self {
        Wino { n, c, h, w, o, th: h.div_ceil(2), tw: w.div_ceil(2) }
    }

    /// Tiles per sample.
    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Samples per chunk: at most [`MAX_COLS`] tiles, at least [`MIN_CHUNKS`] chunks, but no
    /// fewer than [`MIN_COLS`] tiles; shapes only.
    fn samples_per_chunk(&self) -> usize {
        let t = self.tiles().max(1);
        let by_cols = (MAX_COLS / t).max(1);
        let by_chunks = self.n.div_ceil(MIN_CHUNKS);
        by_cols.min(by_chunks).max(MIN_COLS.div_ceil(t)).min(self.n).max(1)
    }

    /// Whether Winograd is faster than im2col + GEMM for this layer's convolution `dir`,
    /// measured per layer and direction in whole ResNet-20 (batch 128) and ResNet-18 (batch 8)
    /// training steps (decisions F12): at least [`MIN_TILE_COLS`] tiles across a row (narrower
    /// rows leave lanes of every 8-tile transform idle: 8×8 and 7×7 planes were 30-70% slower),
    /// and at least [`MIN_CHANNELS`] channels along the products' `K` axis. With
    /// [`MIN_CHANNELS_FULL_LANES`] to [`MIN_CHANNELS`] the products are thin and the transforms
    /// a large share: the forward and the input gradient pay only where the tiles fill every
    /// 8-lane group (ResNet-20's 16-channel 32×32 layers, 16 tiles across: 15% and 25-30%
    /// faster; at 28×28, 14 tiles across, 45% and 35% slower), and the weight gradient not at
    /// all (40% slower at 32×32). The 3-channel stem stays on im2col.
    pub(super) fn pays(&self, dir: Direction) -> bool {
        let k = match dir {
            Direction::Forward | Direction::WeightGrad => self.c,
            Direction::InputGrad => self.o,
        };
        let thin_ok = dir != Direction::WeightGrad && k >= MIN_CHANNELS_FULL_LANES && self.tw.is_multiple_of(L);
        self.tw >= MIN_TILE_COLS && (k >= MIN_CHANNELS || thin_ok)
    }

    /// The same geometry with the channel axes swapped (the input gradient's convolution).
    fn swapped(&self) -> Self {
        Wino { c: self.o, o: self.c, ..*self }
    }

    /// Floats of one plane's padded, deinterleaved buffer ([`pad_plane`]): `2·th + 2` rows of
    /// two halves (even and odd padded columns) of `tw + 1 + L` values each (the `L` spare
    /// zeros let every 8-lane load stay inside).
    fn plane_len(&self) -> usize {
        (2 * self.th + 2) * self.half_row() * 2
    }

    fn half_row(&self) -> usize {
        self.tw + 1 + L
    }
}

/// Whether the CPU convolution takes the Winograd path for this kernel, stride and padding.
pub(super) fn applies(kh: usize, kw: usize, stride: usize, pad: [usize; 4]) -> bool {
    kh == 3 && kw == 3 && stride == 1 && pad == [1; 4]
}

/// `U[ξ][r][s] = (G g Gᵀ)[ξ]` for the `rows × cols` 3×3 kernels `g = kernel(r, s)` (`G` is
/// `[[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`), computed in f64 and rounded once.
fn kernel_transform(rows: usize, cols: usize, kernel: impl Fn(usize, usize) -> [[f32; 3]; 3] + Sync) -> Vec<f32> {
    let g4 = |a: f64, b: f64, c: f64| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    // Row by row in parallel into `by_row[r][ξ][s]`, then each run `[r][ξ][..]` to `U[ξ][r][..]`.
    let mut by_row = vec![0f32; 16 * rows * cols];
    by_row.par_chunks_mut((16 * cols).max(1)).enumerate().for_each(|(r, dst)| {
        for s in 0..cols {
            let g = kernel(r, s);
            // t = G g (4 × 3), then t Gᵀ (4 × 4).
            let mut t = [[0f64; 3]; 4];
            for j in 0..3 {
                let col = g4(g[0][j] as f64, g[1][j] as f64, g[2][j] as f64);
                for (ti, v) in t.iter_mut().zip(col) {
                    ti[j] = v;
                }
            }
            for (a, ta) in t.iter().enumerate() {
                for (b, v) in g4(ta[0], ta[1], ta[2]).into_iter().enumerate() {
                    dst[(a * 4 + b) * cols + s] = v as f32;
                }
            }
        }
    });
    let mut u = vec![0f32; 16 * rows * cols];
    for (r, src) in by_row.chunks_exact(16 * cols).enumerate() {
        for (xi, run) in src.chunks_exact(cols).enumerate() {
            u[(xi * rows + r) * cols..][..cols].copy_from_slice(run);
        }
    }
    u
}

/// `U` for the forward: `W[o][c]` as the `O × C` kernels.
fn forward_kernels(wg: &Wino, w: &[f32]) -> Vec<f32> {
    kernel_transform(wg.o, wg.c, |o, c| kernel3(w, (o * wg.c + c) * 9, false))
}

/// `U` for the input gradient: `W'[c][o] = W[o][c]` flipped, as the `C × O` kernels.
fn input_grad_kernels(wg: &Wino, w: &[f32]) -> Vec<f32> {
    kernel_transform(wg.c, wg.o, |c, o| kernel3(w, (o * wg.c + c) * 9, true))
}

/// The 3×3 kernel at `w[at..at + 9]`, rotated by 180° when `flip`.
fn kernel3(w: &[f32], at: usize, flip: bool) -> [[f32; 3]; 3] {
    let k = &w[at..at + 9];
    std::array::from_fn(|i| std::array::from_fn(|j| if flip { k[(2 - i) * 3 + 2 - j] } else { k[i * 3 + j] }))
}

/// Eight `f32` lanes, the unit every transform works in: a plain array in the portable build, an
/// AVX `__m256` register in the [`avx2`] build. Both run the same additions and subtractions in
/// the same order, so the two builds give bitwise the same results.
trait Lanes: Copy {
    /// All lanes zero.
    fn zero() -> Self;
    /// Lane-wise `self + o`.
    fn add(self, o: Self) -> Self;
    /// Lane-wise `self - o`.
    fn sub(self, o: Self) -> Self;
    /// The first [`L`] values of `s` (which must hold them).
    fn load(s: &[f32]) -> Self;
    /// Into the first [`L`] values of `d` (which must hold them).
    fn store(self, d: &mut [f32]);
    /// `(s[0], s[2], …, s[14])` and `(s[1], s[3], …, s[15])` from the first `2·L` values of `s`.
    fn deinterleave(s: &[f32]) -> (Self, Self);
    /// `d[2q] = a[q]`, `d[2q + 1] = b[q]` into the first `2·L` values of `d`.
    fn interleave(a: Self, b: Self, d: &mut [f32]);
}

impl Lanes for [f32; L] {
    #[inline(always)]
    fn zero() -> Self {
        [0.0; L]
    }
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        for (a, b) in self.iter_mut().zip(o) {
            *a += b;
        }
        self
    }
    #[inline(always)]
    fn sub(mut self, o: Self) -> Self {
        for (a, b) in self.iter_mut().zip(o) {
            *a -= b;
        }
        self
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let mut a = [0f32; L];
        a.copy_from_slice(&s[..L]);
        a
    }
    #[inline(always)]
    fn store(self, d: &mut [f32]) {
        d[..L].copy_from_slice(&self);
    }
    #[inline(always)]
    fn deinterleave(s: &[f32]) -> (Self, Self) {
        let (mut a, mut b) = ([0f32; L], [0f32; L]);
        for ((pair, x), y) in s[..2 * L].chunks_exact(2).zip(&mut a).zip(&mut b) {
            *x = pair[0];
            *y = pair[1];
        }
        (a, b)
    }
    #[inline(always)]
    fn interleave(a: Self, b: Self, d: &mut [f32]) {
        for ((pair, x), y) in d[..2 * L].chunks_exact_mut(2).zip(a).zip(b) {
            pair[0] = x;
            pair[1] = y;
        }
    }
}

/// `len ≤ L` values from the front of `s` as lanes, zeros after them.
#[inline(always)]
fn load_n<V: Lanes>(s: &[f32], len: usize) -> V {
    if len == L {
        return V::load(s);
    }
    let mut a = [0f32; L];
    a[..len].copy_from_slice(&s[..len]);
    V::load(&a)
}

/// The first `len ≤ L` lanes of `v` into the front of `d`.
#[inline(always)]
fn store_n<V: Lanes>(v: V, d: &mut [f32], len: usize) {
    if len == L {
        return v.store(d);
    }
    let mut a = [0f32; L];
    v.store(&mut a);
    d[..len].copy_from_slice(&a[..len]);
}

/// `Bᵀ · (a, b, c, d)` (`Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`).
#[inline(always)]
fn bt<V: Lanes>(a: V, b: V, c: V, d: V) -> [V; 4] {
    [a.sub(c), b.add(c), c.sub(b), b.sub(d)]
}

/// `Aᵀ · (a, b, c, d)` (`Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`).
#[inline(always)]
fn at<V: Lanes>(a: V, b: V, c: V, d: V) -> [V; 2] {
    [a.add(b).add(c), b.sub(c).sub(d)]
}

/// `A · (y0, y1)`, the adjoint of [`at`]: `(y0, y0 + y1, y0 - y1, -y1)`.
#[inline(always)]
fn a4<V: Lanes>(y0: V, y1: V) -> [V; 4] {
    [y0, y0.add(y1), y0.sub(y1), V::zero().sub(y1)]
}

/// Copies the `h × w` plane `x` into `buf` ([`Wino::plane_len`]): padded row `r` holds input row
/// `r - 1`, its first half the padded columns `0, 2, 4, ...` (input columns `-1, 1, 3, ...`),
/// its second half the odd ones (input columns `0, 2, 4, ...`); zeros outside the input.
///
/// Only the positions inside the input are written: `buf` must come zeroed and be reused for
/// this geometry only, so the padding is still zero (the positions depend on the shape alone).
#[inline(always)]
fn pad_plane<V: Lanes>(g: &Wino, x: &[f32], buf: &mut [f32]) {
    let hr = g.half_row();
    let blocks = g.w / (2 * L);
    for (iy, src) in x.chunks_exact(g.w).take(g.h).enumerate() {
        let row = &mut buf[(iy + 1) * 2 * hr..][..2 * hr];
        let (even, odd) = row.split_at_mut(hr);
        // even[i] = x[2i - 1] for i ≥ 1; odd[i] = x[2i].
        for k in 0..blocks {
            let (e, o) = V::deinterleave(&src[2 * L * k..]);
            e.store(&mut odd[L * k..]);
            o.store(&mut even[L * k + 1..]);
        }
        for (i, &v) in src.iter().enumerate().skip(2 * L * blocks) {
            if i % 2 == 0 {
                odd[i / 2] = v;
            } else {
                even[i / 2 + 1] = v;
            }
        }
    }
}

/// `V[ξ·xi_stride(C, pc) + c·pc + p0 + tile]` of one padded plane ([`pad_plane`]) of channel `c`:
/// `Bᵀ d B` for every tile's 4×4 patch `d` ([`bt`]), 8 tiles of a tile row at a time.
#[inline(always)]
fn input_transform<V: Lanes>(g: &Wino, plane: &[f32], v: &mut [f32], c: usize, pc: usize, p0: usize) {
    let hr = g.half_row();
    let xi_stride = xi_stride(g.c, pc);
    for ty in 0..g.th {
        for tx0 in (0..g.tw).step_by(L) {
            let len = L.min(g.tw - tx0);
            // d[k][col] for 8 tiles: the patch columns are even[tx], odd[tx], even[tx+1], odd[tx+1].
            let mut d = [[V::zero(); 4]; 4];
            for (k, dk) in d.iter_mut().enumerate() {
                let (even, odd) = plane[(2 * ty + k) * 2 * hr..][..2 * hr].split_at(hr);
                *dk =
                    [V::load(&even[tx0..]), V::load(&odd[tx0..]), V::load(&even[tx0 + 1..]), V::load(&odd[tx0 + 1..])];
            }
            // Rows: s[u][col] = (Bᵀ d)[u][col], then columns.
            let mut s = [[V::zero(); 4]; 4];
            for col in 0..4 {
                for (u, val) in bt(d[0][col], d[1][col], d[2][col], d[3][col]).into_iter().enumerate() {
                    s[u][col] = val;
                }
            }
            for (u, su) in s.iter().enumerate() {
                for (vv, out) in bt(su[0], su[1], su[2], su[3]).into_iter().enumerate() {
                    store_n(out, &mut v[((u * 4 + vv) * xi_stride) + c * pc + p0 + ty * g.tw + tx0..], len);
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` ([`at`]) from `M[ξ·xi_stride(O, pc) + o·pc + p0 + tile]` into the `h × w` plane `y` of output
/// channel `o`, clipping the tiles at odd edges.
#[inline(always)]
fn output_transform<V: Lanes>(g: &Wino, m: &[f32], o: usize, pc: usize, p0: usize, y: &mut [f32]) {
    let xi_stride = xi_stride(g.o, pc);
    for ty in 0..g.th {
        for tx0 in (0..g.tw).step_by(L) {
            let len = L.min(g.tw - tx0);
            let mut mv = [V::zero(); 16];
            for (xi, mx) in mv.iter_mut().enumerate() {
                *mx = load_n(&m[xi * xi_stride + o * pc + p0 + ty * g.tw + tx0..], len);
            }
            // Rows first (cols[col][a]), then columns.
            let col = |vv: usize| at(mv[vv], mv[4 + vv], mv[8 + vv], mv[12 + vv]);
            let cols = [col(0), col(1), col(2), col(3)];
            for (a, iy) in (2 * ty..(2 * ty + 2).min(g.h)).enumerate() {
                let [y0, y1] = at(cols[0][a], cols[1][a], cols[2][a], cols[3][a]);
                let row = &mut y[iy * g.w..(iy + 1) * g.w];
                if len == L && 2 * tx0 + 2 * L <= g.w {
                    V::interleave(y0, y1, &mut row[2 * tx0..]);
                    continue;
                }
                let (mut a0, mut a1) = ([0f32; L], [0f32; L]);
                y0.store(&mut a0);
                y1.store(&mut a1);
                for q in 0..len {
                    let ix = 2 * (tx0 + q);
                    row[ix] = a0[q];
                    if ix + 1 < g.w {
                        row[ix + 1] = a1[q];
                    }
                }
            }
        }
    }
}

/// `dM[ξ·xi_stride(O, pc) + o·pc + p0 + tile] = (A dY Aᵀ)[ξ]` ([`a4`]), the adjoint of [`output_transform`],
/// from the `h × w` gradient plane `gy` of output channel `o` (zero beyond the odd edges).
#[inline(always)]
fn output_grad_transform<V: Lanes>(g: &Wino, gy: &[f32], o: usize, pc: usize, p0: usize, dm: &mut [f32]) {
    let xi_stride = xi_stride(g.o, pc);
    for ty in 0..g.th {
        for tx0 in (0..g.tw).step_by(L) {
            let len = L.min(g.tw - tx0);
            // dy[a][e] for 8 tiles: output (2ty + a, 2(tx0 + q) + e).
            let mut dy = [[V::zero(); 2]; 2];
            for (a, dya) in dy.iter_mut().enumerate() {
                let iy = 2 * ty + a;
                if iy >= g.h {
                    continue;
                }
                let row = &gy[iy * g.w..][..g.w];
                if len == L && 2 * tx0 + 2 * L <= g.w {
                    let (e0, e1) = V::deinterleave(&row[2 * tx0..]);
                    *dya = [e0, e1];
                    continue;
                }
                let mut t = [[0f32; L]; 2];
                for q in 0..len {
                    for (e, te) in t.iter_mut().enumerate() {
                        if let Some(&val) = row.get(2 * (tx0 + q) + e) {
                            te[q] = val;
                        }
                    }
                }
                *dya = [V::load(&t[0]), V::load(&t[1])];
            }
            // Columns first (c[a][v]), then rows.
            let c0 = a4(dy[0][0], dy[0][1]);
            let c1 = a4(dy[1][0], dy[1][1]);
            for vv in 0..4 {
                for (u, val) in a4(c0[vv], c1[vv]).into_iter().enumerate() {
                    store_n(val, &mut dm[(u * 4 + vv) * xi_stride + o * pc + p0 + ty * g.tw + tx0..], len);
                }
            }
        }
    }
}

/// `V` of the samples `x` (`pc` tile columns, whole samples) into `v` (16 blocks of `C × pc`, [`xi_stride`] apart).
fn transform_inputs(g: &Wino, x: &[f32], v: &mut [f32], plane: &mut [f32], pc: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        return unsafe { avx2::transform_inputs(g, x, v, plane, pc) };
    }
    transform_inputs_with::<[f32; L]>(g, x, v, plane, pc)
}

/// `Y` of the products `m` (16 blocks of `O × pc`, [`xi_stride`] apart) into the samples `y` (`N' × O × H × W`, whole
/// samples), every element written.
fn output_transforms(g: &Wino, m: &[f32], pc: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        return unsafe { avx2::output_transforms(g, m, pc, y) };
    }
    output_transforms_with::<[f32; L]>(g, m, pc, y)
}

/// `dM` (16 blocks of `O × pc`, [`xi_stride`] apart, every element of them written) of the output gradient `gy` (whole samples).
fn output_grad_transforms(g: &Wino, gy: &[f32], pc: usize, dm: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        return unsafe { avx2::output_grad_transforms(g, gy, pc, dm) };
    }
    output_grad_transforms_with::<[f32; L]>(g, gy, pc, dm)
}

#[inline(always)]
fn transform_inputs_with<V: Lanes>(g: &Wino, x: &[f32], v: &mut [f32], plane: &mut [f32], pc: usize) {
    let (hw, t) = (g.h * g.w, g.tiles());
    for (b, xb) in x.chunks_exact(g.c * hw).enumerate() {
        for (c, xc) in xb.chunks_exact(hw).enumerate() {
            pad_plane::<V>(g, xc, plane);
            input_transform::<V>(g, plane, v, c, pc, b * t);
        }
    }
}

#[inline(always)]
fn output_transforms_with<V: Lanes>(g: &Wino, m: &[f32], pc: usize, y: &mut [f32]) {
    let (hw, t) = (g.h * g.w, g.tiles());
    for (b, yb) in y.chunks_exact_mut(g.o * hw).enumerate() {
        for (o, yo) in yb.chunks_exact_mut(hw).enumerate() {
            output_transform::<V>(g, m, o, pc, b * t, yo);
        }
    }
}

#[inline(always)]
fn output_grad_transforms_with<V: Lanes>(g: &Wino, gy: &[f32], pc: usize, dm: &mut [f32]) {
    let (hw, t) = (g.h * g.w, g.tiles());
    for (b, gyb) in gy.chunks_exact(g.o * hw).enumerate() {
        for (o, gyo) in gyb.chunks_exact(hw).enumerate() {
            output_grad_transform::<V>(g, gyo, o, pc, b * t, dm);
        }
    }
}

/// The transforms on AVX2 registers (`__m256` [`Lanes`]), entered only after the processor was
/// found to have AVX2.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Lanes, Wino, L};

    /// The `__m256` lanes. The intrinsics need AVX (the permute AVX2): every value of this type
    /// is made and used inside the `#[target_feature(enable = "avx2")]` functions below, into
    /// which these always-inlined methods are compiled.
    impl Lanes for __m256 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: reached only from the AVX2 functions below (see the impl's note).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: as for `zero`.
            unsafe { _mm256_add_ps(self, o) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: as for `zero`.
            unsafe { _mm256_sub_ps(self, o) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..L];
            // SAFETY: `s` holds 8 floats (checked by the slice); AVX as for `zero`.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            let d = &mut d[..L];
            // SAFETY: `d` holds 8 floats (checked by the slice); AVX as for `zero`.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), self) }
        }
        #[inline(always)]
        fn deinterleave(s: &[f32]) -> (Self, Self) {
            let s = &s[..2 * L];
            // SAFETY: `s` holds 16 floats (checked by the slice); AVX2 as for `zero`.
            unsafe {
                let (lo, hi) = (_mm256_loadu_ps(s.as_ptr()), _mm256_loadu_ps(s.as_ptr().add(L)));
                // Per 128-bit half: (lo0, lo2, hi0, hi2) and (lo1, lo3, hi1, hi3); then the
                // 64-bit quarters reordered 0, 2, 1, 3.
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
                let fix = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
                (fix(even), fix(odd))
            }
        }
        #[inline(always)]
        fn interleave(a: Self, b: Self, d: &mut [f32]) {
            let d = &mut d[..2 * L];
            // SAFETY: `d` holds 16 floats (checked by the slice); AVX as for `zero`.
            unsafe {
                // (a0 b0 a1 b1 | a4 b4 a5 b5) and (a2 b2 a3 b3 | a6 b6 a7 b7), then the halves.
                let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(d.as_mut_ptr().add(L), _mm256_permute2f128_ps::<0x31>(lo, hi));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn transform_inputs(g: &Wino, x: &[f32], v: &mut [f32], plane: &mut [f32], pc: usize) {
        super::transform_inputs_with::<__m256>(g, x, v, plane, pc)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn output_transforms(g: &Wino, m: &[f32], pc: usize, y: &mut [f32]) {
        super::output_transforms_with::<__m256>(g, m, pc, y)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn output_grad_transforms(g: &Wino, gy: &[f32], pc: usize, dm: &mut [f32]) {
        super::output_grad_transforms_with::<__m256>(g, gy, pc, dm)
    }
}

/// The 16 products `M_ξ[O, pc] = U_ξ[O, C] · V_ξ[C, pc]`: up to 64 channels without packing
/// ([`short_k_gemm`]), else through the `gemm` crate.
fn products(g: &Wino, u: &[f32], v: &[f32], m: &mut [f32], pc: usize) {
    let (oc, cp, op) = (g.o * g.c, xi_stride(g.c, pc), xi_stride(g.o, pc));
    for xi in 0..16 {
        let (uxi, vxi) = (&u[xi * oc..][..oc], &v[xi * cp..][..g.c * pc]);
        let mxi = &mut m[xi * op..][..g.o * pc];
        if short_k_gemm::pays(g.c) {
            short_k_gemm::matmul_short_k(g.o, pc, g.c, uxi, vxi, mxi);
        } else {
            matmul(g.o, pc, g.c, mxi, false, uxi, g.c as isize, 1, vxi, pc as isize, 1);
        }
    }
}

/// `y = conv(x, ·)` for the transformed kernels `u` ([`kernel_transform`], `16 × O × C`):
/// `x` is `N × C × H × W`, `y` is `N × O × H × W`, every element written.
fn convolve(g: &Wino, u: &[f32], x: &[f32], y: &mut [f32]) {
    let (hw, spc, t) = (g.h * g.w, g.samples_per_chunk(), g.tiles());
    y.par_chunks_mut(spc * g.o * hw).zip(x.par_chunks(spc * g.c * hw)).for_each_init(
        || (Vec::new(), Vec::new(), vec![0f32; g.plane_len()]),
        |(v, m, plane), (yc, xc)| {
            let pc = xc.len() / (g.c * hw) * t;
            v.resize(16 * xi_stride(g.c, pc), 0.0);
            m.resize(16 * xi_stride(g.o, pc), 0.0);
            transform_inputs(g, xc, v, plane, pc);
            products(g, u, v, m, pc);
            output_transforms(g, m, pc, yc);
        },
    );
}

/// The forward `y = conv(x, w)` (`w` is `O × C × 3 × 3`) into `y` (`N × O × H × W`).
pub(super) fn forward(g: &Wino, x: &[f32], w: &[f32], y: &mut [f32]) {
    convolve(g, &forward_kernels(g, w), x, y);
}

/// The input gradient `dx = conv(gy, W')` into `dx` (`N × C × H × W`).
pub(super) fn input_grad(g: &Wino, gy: &[f32], w: &[f32], dx: &mut [f32]) {
    convolve(&g.swapped(), &input_grad_kernels(g, w), gy, dx);
}

/// The number of groups the weight gradient's chunks are summed in: at most [`DW_GROUPS`], at
/// most one per chunk, and few enough that the `16 × C × O` partial sums fit in
/// [`DW_PARTIAL_BYTES`]; shapes only.
fn dw_groups(g: &Wino, chunks: usize) -> usize {
    let by_memory = DW_PARTIAL_BYTES / (16 * g.c * g.o * std::mem::size_of::<f32>()).max(1);
    DW_GROUPS.min(by_memory).min(chunks).max(1)
}

/// The weight gradient `dw[o][c][i][j]` (`O × C × 3 × 3`, overwritten) of `y = conv(x, w)` for
/// the output gradient `gy`: per chunk `dUᵀ_ξ[C, O] += V_ξ[C, pc] · dM_ξᵀ[pc, O]`, the chunks
/// in shape-fixed groups summed in group order, then `Gᵀ dU G` per kernel in f64.
pub(super) fn weight_grad(g: &Wino, x: &[f32], gy: &[f32], dw: &mut [f32]) {
    let (hw, spc, t) = (g.h * g.w, g.samples_per_chunk(), g.tiles());
    let chunks = g.n.div_ceil(spc);
    let per = chunks.div_ceil(dw_groups(g, chunks));
    let (co, cp, op) = (g.c * g.o, g.c, g.o);
    let partial: Vec<Vec<f32>> = (0..chunks.div_ceil(per))
        .into_par_iter()
        .map(|grp| {
            let mut acc = vec![0f32; 16 * co];
            let (mut v, mut m, mut plane) = (Vec::new(), Vec::new(), vec![0f32; g.plane_len()]);
            for (k, chunk) in (grp * per..((grp + 1) * per).min(chunks)).enumerate() {
                let (b0, b1) = (chunk * spc, ((chunk + 1) * spc).min(g.n));
                let pc = (b1 - b0) * t;
                v.resize(16 * xi_stride(cp, pc), 0.0);
                m.resize(16 * xi_stride(op, pc), 0.0);
                transform_inputs(g, &x[b0 * g.c * hw..b1 * g.c * hw], &mut v, &mut plane, pc);
                output_grad_transforms(g, &gy[b0 * g.o * hw..b1 * g.o * hw], pc, &mut m);
                for xi in 0..16 {
                    let (vxi, mxi) = (&v[xi * xi_stride(cp, pc)..][..cp * pc], &m[xi * xi_stride(op, pc)..][..op * pc]);
                    let dst = &mut acc[xi * co..][..co];
                    matmul(g.c, g.o, pc, dst, k > 0, vxi, pc as isize, 1, mxi, 1, pc as isize);
                }
            }
            acc
        })
        .collect();
    let mut groups = partial.into_iter();
    let mut du = groups.next().unwrap_or_else(|| vec![0f32; 16 * co]);
    for p in groups {
        for (d, &v) in du.iter_mut().zip(&p) {
            *d += v;
        }
    }
    // dg = Gᵀ dU G: t[i][v] = Σ_u G[u][i] dU[u][v], then over v.
    let gt = |a: f64, b: f64, c: f64, d: f64| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    dw.par_chunks_mut(g.c * 9).enumerate().for_each(|(o, dwo)| {
        for (c, k) in dwo.chunks_exact_mut(9).enumerate() {
            let d = |xi: usize| du[(xi * g.c + c) * g.o + o] as f64;
            let cols: [[f64; 3]; 4] = std::array::from_fn(|vv| gt(d(vv), d(4 + vv), d(8 + vv), d(12 + vv)));
            for i in 0..3 {
                let row = gt(cols[0][i], cols[1][i], cols[2][i], cols[3][i]);
                for j in 0..3 {
                    k[i * 3 + j] = row[j] as f32;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_cpu::{conv2d_cpu_with, ConvAlgo};
    use candle_core::{Device, Tensor, Var};

    /// y, dx and dw of `sum(conv(x, w) · g)` through the chosen algorithm.
    fn run(x: &[f32], xs: [usize; 4], w: &[f32], o: usize, algo: ConvAlgo) -> [Vec<f32>; 3] {
        let dev = Device::Cpu;
        let xv = Var::from_vec(x.to_vec(), xs.to_vec(), &dev).unwrap();
        let wv = Var::from_vec(w.to_vec(), (o, xs[1], 3, 3), &dev).unwrap();
        let y = conv2d_cpu_with(xv.as_tensor(), wv.as_tensor(), 1, [1; 4], algo).unwrap();
        let g = Tensor::from_vec(crate::init::det_fill(y.elem_count(), 9, 1.0), y.shape(), &dev).unwrap();
        let gr = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        [flat(&y), flat(gr.get(xv.as_tensor()).unwrap()), flat(gr.get(wv.as_tensor()).unwrap())]
    }

    /// The direct convolution and both gradients in f64 (the independent reference).
    fn reference(x: &[f32], [n, c, h, w]: [usize; 4], wt: &[f32], o: usize) -> [Vec<f64>; 3] {
        let gy = crate::init::det_fill(n * o * h * w, 9, 1.0);
        let (mut y, mut dx, mut dw) = (vec![0f64; n * o * h * w], vec![0f64; x.len()], vec![0f64; wt.len()]);
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..h {
                    for ox in 0..w {
                        let yi = ((b * o + oc) * h + oy) * w + ox;
                        for ic in 0..c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (iy, ix) = (oy as isize + i as isize - 1, ox as isize + j as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xi = ((b * c + ic) * h + iy as usize) * w + ix as usize;
                                    let wi = ((oc * c + ic) * 3 + i) * 3 + j;
                                    y[yi] += x[xi] as f64 * wt[wi] as f64;
                                    dx[xi] += gy[yi] as f64 * wt[wi] as f64;
                                    dw[wi] += gy[yi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    /// Shapes: odd and even sides, a 1×1 plane, one tile row, batches that leave a partial last
    /// chunk, channel counts that differ in each direction, and enough tiles for several chunks
    /// and weight-gradient groups.
    const CASES: [([usize; 4], usize); 9] = [
        ([1, 1, 1, 1], 1),
        ([2, 3, 5, 7], 4),
        ([3, 2, 8, 8], 5),
        ([1, 4, 2, 17], 3),
        ([13, 3, 6, 5], 2),
        ([9, 5, 4, 4], 6),
        ([130, 2, 3, 3], 2),
        ([4, 16, 32, 32], 16),
        ([20, 8, 9, 11], 12),
    ];

    #[test]
    fn matches_a_direct_f64_convolution_in_value_and_both_gradients() {
        for (xs, o) in CASES {
            let x = crate::init::det_fill(xs.iter().product(), 1, 1.0);
            let w = crate::init::det_fill(o * xs[1] * 9, 2, 0.3);
            let ours = run(&x, xs, &w, o, ConvAlgo::Winograd);
            let want = reference(&x, xs, &w, o);
            for (k, what) in ["y", "dx", "dw"].iter().enumerate() {
                assert_eq!(ours[k].len(), want[k].len(), "{what} size for {xs:?} o={o}");
                // Relative to the magnitude of the sum's terms: f32 rounding grows with the
                // reduction length (C·9 for y and dx, N·H·W·... for dw).
                let scale = want[k].iter().fold(1f64, |m, v| m.max(v.abs()));
                let err = ours[k].iter().zip(&want[k]).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
                assert!(err <= 2e-6 * scale, "{what} differs by {err} (scale {scale}) for {xs:?} o={o}");
            }
        }
    }

    #[test]
    fn agrees_with_the_im2col_path_it_replaces() {
        for (xs, o) in CASES {
            let x = crate::init::det_fill(xs.iter().product(), 3, 1.0);
            let w = crate::init::det_fill(o * xs[1] * 9, 4, 0.3);
            let fast = run(&x, xs, &w, o, ConvAlgo::Winograd);
            let slow = run(&x, xs, &w, o, ConvAlgo::Im2col);
            for (k, what) in ["y", "dx", "dw"].iter().enumerate() {
                let scale = slow[k].iter().fold(1f32, |m, v| m.max(v.abs()));
                let err = fast[k].iter().zip(&slow[k]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err <= 4e-6 * scale, "{what} differs by {err} (scale {scale}) for {xs:?} o={o}");
            }
        }
    }

    #[test]
    fn does_not_depend_on_thread_count() {
        for (xs, o) in [([37, 3, 10, 10], 4), ([5, 16, 24, 24], 16)] {
            let x = crate::init::det_fill(xs.iter().product(), 5, 1.0);
            let w = crate::init::det_fill(o * xs[1] * 9, 6, 0.3);
            let on = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| run(&x, xs, &w, o, ConvAlgo::Winograd))
            };
            assert_eq!(on(1), on(3), "{xs:?} o={o}");
        }
    }

    #[test]
    fn chunks_and_groups_depend_on_shapes_only() {
        // ResNet-20 stage 1 at batch 128: 256 tiles a sample, one sample (256 columns) a chunk.
        assert_eq!(Wino::new(128, 16, 32, 32, 16).samples_per_chunk(), 1);
        // ResNet-20 stage 2: 64 tiles a sample, 4 samples a chunk.
        assert_eq!(Wino::new(128, 32, 16, 16, 32).samples_per_chunk(), 4);
        // ResNet-18 layer 4 at batch 8: 16 tiles a sample, at least 64 columns a chunk.
        assert_eq!(Wino::new(8, 512, 7, 7, 512).samples_per_chunk(), 4);
        // A small batch still splits into chunks of one sample.
        assert_eq!(Wino::new(8, 64, 56, 56, 64).samples_per_chunk(), 1);
        // 16 MiB partials for 512 × 512: two fit in 32 MiB.
        assert_eq!(dw_groups(&Wino::new(8, 512, 7, 7, 512), 2), 2);
        assert_eq!(dw_groups(&Wino::new(128, 16, 32, 32, 16), 32), DW_GROUPS);
    }

    #[test]
    fn pays_for_wide_planes_with_enough_channels_only() {
        use Direction::*;
        // ResNet-18 at 56, 28 and 14, ResNet-20 at 32 and 16: Winograd in all three.
        for (c, side) in [(64, 56), (128, 28), (256, 14), (32, 16), (32, 11)] {
            for dir in [Forward, InputGrad, WeightGrad] {
                assert!(Wino::new(8, c, side, side, c).pays(dir), "{c} channels, {side}×{side}, {dir:?}");
            }
        }
        // 7×7, 8×8 and 10×10 planes and the 3-channel stem: im2col in all three.
        for (c, side) in [(512, 7), (64, 8), (64, 10), (3, 32), (15, 224)] {
            for dir in [Forward, InputGrad, WeightGrad] {
                assert!(!Wino::new(8, c, side, side, c).pays(dir), "{c} channels, {side}×{side}, {dir:?}");
            }
        }
        // 16 channels: at 32×32 (16 tiles across, full lane groups) Winograd forward and input
        // gradient and im2col weight gradient; at 28×28 (14 tiles across) im2col throughout.
        let r20 = Wino::new(128, 16, 32, 32, 16);
        assert!(r20.pays(Forward) && r20.pays(InputGrad) && !r20.pays(WeightGrad));
        let r20_28 = Wino::new(128, 16, 28, 28, 16);
        assert!(!r20_28.pays(Forward) && !r20_28.pays(InputGrad) && !r20_28.pays(WeightGrad));
        // The stem (3 → 16): its input gradient (16 channels along K) would be Winograd.
        let stem = Wino::new(128, 3, 32, 32, 16);
        assert!(!stem.pays(Forward) && stem.pays(InputGrad) && !stem.pays(WeightGrad));
    }

    #[test]
    fn auto_takes_winograd_where_it_pays_and_im2col_elsewhere() {
        // Bitwise equal to the path it picks: Winograd for 32 channels at 12×12, im2col at 8×8.
        let pick = |xs: [usize; 4], algo: ConvAlgo| {
            let x = crate::init::det_fill(xs.iter().product(), 7, 1.0);
            let w = crate::init::det_fill(xs[1] * xs[1] * 9, 8, 0.3);
            run(&x, xs, &w, xs[1], algo)
        };
        if crate::ops::conv_cpu::winograd_enabled() {
            assert_eq!(pick([2, 32, 12, 12], ConvAlgo::Auto), pick([2, 32, 12, 12], ConvAlgo::Winograd));
            assert_ne!(pick([2, 32, 12, 12], ConvAlgo::Auto), pick([2, 32, 12, 12], ConvAlgo::Im2col));
            // 16 channels, 8 tiles across: Winograd forward and input gradient, im2col weight
            // gradient.
            let (auto, wino, im2col) = (
                pick([2, 16, 16, 16], ConvAlgo::Auto),
                pick([2, 16, 16, 16], ConvAlgo::Winograd),
                pick([2, 16, 16, 16], ConvAlgo::Im2col),
            );
            assert_eq!((&auto[0], &auto[1]), (&wino[0], &wino[1]));
            assert_ne!((&auto[0], &auto[1]), (&im2col[0], &im2col[1]));
            assert_eq!(auto[2], im2col[2]);
            assert_ne!(auto[2], wino[2]);
        }
        assert_eq!(pick([2, 32, 8, 8], ConvAlgo::Auto), pick([2, 32, 8, 8], ConvAlgo::Im2col));
    }

    #[test]
    fn the_avx2_transforms_match_the_portable_ones_bitwise() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // Odd and even sides, rows narrower and wider than 16 (the deinterleaved blocks).
            for (n, c, h, w, o) in [(2, 3, 5, 7, 4), (1, 2, 9, 33, 3), (3, 4, 16, 16, 2)] {
                let g = Wino::new(n, c, h, w, o);
                let pc = n * g.tiles();
                let x = crate::init::det_fill(n * c * h * w, 11, 1.0);
                let gy = crate::init::det_fill(n * o * h * w, 12, 1.0);
                let m = crate::init::det_fill(16 * xi_stride(o, pc), 13, 1.0);
                let inputs = |avx: bool| {
                    let (mut v, mut plane) = (vec![0f32; 16 * xi_stride(c, pc)], vec![0f32; g.plane_len()]);
                    if avx {
                        // SAFETY: AVX2 was detected above.
                        unsafe { avx2::transform_inputs(&g, &x, &mut v, &mut plane, pc) }
                    } else {
                        transform_inputs_with::<[f32; L]>(&g, &x, &mut v, &mut plane, pc)
                    }
                    v
                };
                let outputs = |avx: bool| {
                    let mut y = vec![0f32; n * o * h * w];
                    if avx {
                        // SAFETY: AVX2 was detected above.
                        unsafe { avx2::output_transforms(&g, &m, pc, &mut y) }
                    } else {
                        output_transforms_with::<[f32; L]>(&g, &m, pc, &mut y)
                    }
                    y
                };
                let grads = |avx: bool| {
                    let mut dm = vec![0f32; 16 * xi_stride(o, pc)];
                    if avx {
                        // SAFETY: AVX2 was detected above.
                        unsafe { avx2::output_grad_transforms(&g, &gy, pc, &mut dm) }
                    } else {
                        output_grad_transforms_with::<[f32; L]>(&g, &gy, pc, &mut dm)
                    }
                    dm
                };
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                assert_eq!(bits(inputs(true)), bits(inputs(false)), "V for {n}×{c}×{h}×{w}");
                assert_eq!(bits(outputs(true)), bits(outputs(false)), "Y for {n}×{o}×{h}×{w}");
                assert_eq!(bits(grads(true)), bits(grads(false)), "dM for {n}×{o}×{h}×{w}");
            }
        }
    }

    #[test]
    fn applies_to_3x3_stride_1_padding_1_only() {
        assert!(applies(3, 3, 1, [1; 4]));
        assert!(!applies(3, 3, 2, [1; 4]));
        assert!(!applies(3, 3, 1, [0; 4]));
        assert!(!applies(3, 3, 1, [1, 1, 0, 1]));
        assert!(!applies(1, 1, 1, [0; 4]));
        assert!(!applies(1, 3, 1, [1; 4]));
    }
}
