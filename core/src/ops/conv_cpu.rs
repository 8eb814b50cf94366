//! A CPU convolution of our own: per-sample im2col and one GEMM (the `gemm` crate candle also
//! uses), with a backward that computes `dx` (GEMM + col2im) and `dW` (GEMM) directly.
//!
//! candle 0.11's CPU conv2d is slow at CNN sizes, and its input gradient goes through a direct
//! transposed convolution that is slower still; this op replaces both on CPU (other devices keep
//! candle's convolution). Any stride, per-side zero padding and rectangular kernels are handled
//! natively. Samples run in parallel; `dW` is accumulated in sample groups whose count depends
//! on the shapes only, summed in group order, so results do not depend on the thread count.
//!
//! Each GEMM's orientation was chosen by measurement (decisions F10): `dW` is accumulated
//! transposed, the forward of convs with few output channels runs transposed, im2col splits
//! each row into zero edges and a contiguous middle, and 1×1 stride-1 convs skip im2col.
//! Given the operands' integer grids ([`conv2d_cpu_on_grids`], a quantized conv in
//! retraining), the forward may instead be the exact integer product of
//! [`integer_conv`] (F18); the backward is the same either way.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_slice;
use super::im2col_batched;
use super::integer_conv::{self, Grid};
use super::winograd::{self, Direction, Wino};
use crate::error::Result;

/// Most groups the weight gradient is accumulated in. The count depends on the shapes only
/// ([`dw_groups`]), never on the thread count, so results are thread-count independent.
const DW_GROUPS: usize = 8;

/// Bytes the per-group `dW` partial sums may take together: large kernels get fewer groups
/// (a ResNet-18 layer-4 kernel, 512 × 4608, is 9.4 MB per group; 8 of them came at the
/// step's memory peak, the start of the backward pass).
const DW_PARTIAL_BYTES: usize = 32 << 20;

/// The number of sample groups for `dW`: at most [`DW_GROUPS`], at most one per sample, and
/// few enough that the partial sums fit in [`DW_PARTIAL_BYTES`] (at least one).
fn dw_groups(n: usize, ck: usize, o: usize) -> usize {
    let by_memory = DW_PARTIAL_BYTES / (ck * o * std::mem::size_of::<f32>()).max(1);
    DW_GROUPS.min(by_memory).min(n).max(1)
}

/// Below this many output channels the forward GEMM runs transposed (`yᵀ = colsᵀ·Wᵀ`, then one
/// transpose of the small `hw × o` result): with `o` as the GEMM's row count the microkernel's
/// 16-row tile is mostly idle. Measured with the `gemm` crate on the development machine
/// (AVX2/FMA kernel), per sample: o=16, ck=144, hw=1024 1.50 → 0.90 ms; o=32, ck=288, hw=256
/// 0.87 → 0.75 ms; o=64, ck=576, hw=64 0.73 → 0.95 ms (slower, hence the bound).
const TRANSPOSED_FWD_BELOW_O: usize = 64;

/// Column bytes one band of the banded forward aims at ([`Geom::band_rows`]), against a 1 MiB
/// L2 cache per core on the development machines.
const BAND_BYTES: usize = 256 * 1024;
/// One sample's im2col columns above which the forward runs in bands ([`Geom::band_rows`]):
/// ResNet-18's 7×7 stem (7.4 MB at 224²); its strided 3×3 layers (0.9-1.8 MB) were slower in
/// bands (their bands are thin products).
const BAND_ABOVE_BYTES: usize = 4 << 20;
/// Fewest output columns (`rows · W'`) a band takes: a band is one GEMM's `N`.
const BAND_MIN_COLS: usize = 512;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) pad: [usize; 4],
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geom {
    /// Rows of the im2col matrix: `C · kh · kw`.
    pub(super) fn ck(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output pixels per plane: `H' · W'`.
    pub(super) fn hw_out(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1 stride-1 unpadded convolution: `im2col` is the identity, so the input itself is
    /// the GEMM operand and the input gradient needs no `col2im`.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == [0; 4]
    }
    /// A zeroed `ck × hw` column buffer for [`im2col`]; empty for a pointwise conv, which needs none.
    fn cols_buffer(&self) -> Vec<f32> {
        if self.pointwise() {
            Vec::new()
        } else {
            vec![0f32; self.ck() * self.hw_out()]
        }
    }
    /// Output rows per band of the banded forward ([`forward_im2col_bands`]), or `None` where one
    /// sample's columns are at most [`BAND_ABOVE_BYTES`] (or the forward is pointwise or
    /// transposed): as many rows as keep a band's columns within [`BAND_BYTES`], but at least
    /// [`BAND_MIN_COLS`] columns (ResNet-18's stem: 5 rows of 112).
    fn band_rows(&self) -> Option<usize> {
        let row_bytes = self.ck() * self.ow * std::mem::size_of::<f32>();
        let banded = !self.pointwise() && self.o >= TRANSPOSED_FWD_BELOW_O && row_bytes * self.oh > BAND_ABOVE_BYTES;
        banded.then(|| (BAND_BYTES / row_bytes.max(1)).max(BAND_MIN_COLS.div_ceil(self.ow)).max(1))
    }

    /// The GEMM operand `cols[ck, hw]` of one sample `xb`: `xb` itself for a pointwise conv,
    /// else `im2col` into `buf` (from [`Self::cols_buffer`], only ever written by this geometry's
    /// `im2col`, so its padding is still zero).
    fn cols<'a>(&self, xb: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
        if self.pointwise() {
            xb
        } else {
            im2col(self, xb, buf, true);
            buf
        }
    }
}

/// How the CPU convolution computes its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// Winograd F(2×2, 3×3) ([`super::winograd`]) for the 3×3 stride-1 padding-1 layers where it
    /// was measured to pay (planes at least 11 wide, at least 32 input channels), im2col + GEMM for
    /// every other layer, batched over the samples where the plane is small against the channels
    /// (what [`conv2d_cpu`] uses; decisions F12, F16).
    #[default]
    Auto,
    /// im2col + GEMM for every geometry (the path Winograd replaces; for tests and benches),
    /// small planes with many channels batched over the samples (`im2col_batched.rs`, F16).
    Im2col,
    /// im2col + one GEMM per sample for every geometry, never batched, each sample's columns
    /// built whole (the path the batched products and the banded forward replace, F16; for
    /// tests and benches).
    Im2colPerSample,
    /// Winograd for every 3×3 stride-1 padding-1 layer, whether it pays or not, im2col + GEMM
    /// for the other geometries (for tests and benches). Ignores `EDMIPS_CPU_CONV`.
    Winograd,
}

/// `y = conv2d(x, w)` on CPU (f32, contiguous inputs), with gradients to both.
pub fn conv2d_cpu(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4]) -> Result<Tensor> {
    conv2d_cpu_with(x, w, stride, pad, ConvAlgo::Auto)
}

/// [`conv2d_cpu`] with the product algorithm chosen by the caller (forward and backward).
pub fn conv2d_cpu_with(x: &Tensor, w: &Tensor, stride: usize, pad: [usize; 4], algo: ConvAlgo) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, ConvOp { stride, pad, algo, grids: None })?)
}

/// [`conv2d_cpu`] of an input on the grid `gx` and a kernel on the grid `gw` (each value an
/// integer code times the grid's step): the forward is the exact integer product of
/// [`integer_conv`] where the processor has it, the shapes and codes fit
/// and every value is on its grid, else the f32 path; the backward is [`conv2d_cpu`]'s.
pub fn conv2d_cpu_on_grids(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: [usize; 4],
    gx: Grid,
    gw: Grid,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, ConvOp { stride, pad, algo: ConvAlgo::Auto, grids: Some((gx, gw)) })?)
}

struct ConvOp {
    stride: usize,
    pad: [usize; 4],
    algo: ConvAlgo,
    /// The operands' integer grids, where the caller knows them (the forward may then be
    /// integer, [`conv2d_cpu_on_grids`]).
    grids: Option<(Grid, Grid)>,
}

struct ConvBwdOp {
    stride: usize,
    pad: [usize; 4],
    algo: ConvAlgo,
    /// Whether `dx` is wanted: not for an input that no gradient flows to (the images at the
    /// stem), whose `dx` would be computed and dropped.
    input_grad: bool,
}

fn geom(xl: &Layout, wl: &Layout, stride: usize, pad: [usize; 4]) -> candle_core::Result<Geom> {
    let (n, c, h, w) = xl.shape().dims4()?;
    let (o, ci, kh, kw) = wl.shape().dims4()?;
    if ci != c {
        candle_core::bail!("conv: input has {c} channels, kernel expects {ci}");
    }
    let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
    if hp < kh || wp < kw || stride == 0 {
        candle_core::bail!("conv: kernel {kh}x{kw} does not fit the padded input {hp}x{wp}");
    }
    Ok(Geom { n, c, h, w, o, kh, kw, stride, pad, oh: (hp - kh) / stride + 1, ow: (wp - kw) / stride + 1 })
}

/// Whether [`ConvAlgo::Auto`] may take the Winograd path: yes unless the environment sets
/// `EDMIPS_CPU_CONV=im2col` (an escape hatch, and the switch a side-by-side timing of the two
/// paths in one binary uses); read once per process.
pub fn winograd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("EDMIPS_CPU_CONV").map(|v| v.trim() != "im2col").unwrap_or(true))
}

/// The Winograd geometry of `g` when `algo`, the environment ([`winograd_enabled`]) and the
/// layer's kernel, stride, padding and shapes allow it.
fn winograd_of(g: &Geom, algo: ConvAlgo, dir: Direction) -> Option<Wino> {
    let wg = Wino::new(g.n, g.c, g.h, g.w, g.o);
    let wanted = match algo {
        ConvAlgo::Auto => winograd_enabled() && wg.pays(dir),
        ConvAlgo::Im2col | ConvAlgo::Im2colPerSample => false,
        ConvAlgo::Winograd => true,
    };
    (wanted && winograd::applies(g.kh, g.kw, g.stride, g.pad)).then_some(wg)
}

/// The output columns `[lo, hi)` whose input column `ox·s + j - pl` lies inside `0..w` for
/// kernel column `j` (every other output column reads the zero padding).
pub(super) fn valid_cols(g: &Geom, j: usize) -> (usize, usize) {
    let pl = g.pad[2];
    let lo = if pl > j { (pl - j).div_ceil(g.stride) } else { 0 };
    let hi = if g.w + pl > j { ((g.w - 1 + pl - j) / g.stride + 1).min(g.ow) } else { 0 };
    (lo.min(hi), hi)
}

/// `cols[(c·kh + i)·kw + j][oy·ow + ox] = x[c][oy·s + i - pt][ox·s + j - pl]` (0 outside).
///
/// Each output row is split once into its padded edges (zero-filled) and its valid middle,
/// which is a contiguous copy at stride 1 and a strided gather otherwise: no per-element
/// bounds test. With `padding_zeroed` the zero edges are not written: the caller promises
/// they are zero already, which holds for a zero-initialised buffer that only `im2col` of
/// this geometry has written to (the padded positions depend on the geometry alone).
fn im2col(g: &Geom, x: &[f32], cols: &mut [f32], padding_zeroed: bool) {
    im2col_band(g, x, 0..g.oh, cols, padding_zeroed);
}

/// [`im2col`] for the output rows `oys` only: `cols[ck, oys.len() · W']` (the banded forward's
/// band, [`forward_im2col_bands`]).
fn im2col_band(g: &Geom, x: &[f32], oys: std::ops::Range<usize>, cols: &mut [f32], padding_zeroed: bool) {
    let (n, plane) = (oys.len() * g.ow, g.h * g.w);
    for j in 0..g.kw {
        for c in 0..g.c {
            for i in 0..g.kh {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * n..][..n];
                im2col_row_band(g, &x[c * plane..][..plane], i, j, oys.clone(), row, padding_zeroed);
            }
        }
    }
}

/// One im2col row of one sample: kernel tap `(i, j)` over the input plane `xp` (`h × w`, one
/// channel), `dst[oy·ow + ox] = xp[oy·s + i - pt][ox·s + j - pl]` (`H'W'` values), zero where the
/// window reads the padding (those zeros not written when `padding_zeroed`). Each output row is
/// split once into its zero edges and its valid middle, a contiguous copy at stride 1 and a
/// strided gather otherwise. Shared by [`im2col`] and the batched products' `im2col`.
#[inline(always)]
pub(super) fn im2col_row(g: &Geom, xp: &[f32], i: usize, j: usize, dst: &mut [f32], padding_zeroed: bool) {
    im2col_row_band(g, xp, i, j, 0..g.oh, dst, padding_zeroed);
}

/// [`im2col_row`] for the output rows `oys` only: `dst[(oy - oys.start)·ow + ox]`
/// (`oys.len() · W'` values).
#[inline(always)]
fn im2col_row_band(
    g: &Geom,
    xp: &[f32],
    i: usize,
    j: usize,
    oys: std::ops::Range<usize>,
    dst: &mut [f32],
    padding_zeroed: bool,
) {
    let s = g.stride;
    let (lo, hi) = valid_cols(g, j);
    if s == 1 && g.ow == g.w && lo < hi {
        im2col_rows_shifted(g, xp, i, j, (lo, hi), oys, dst, padding_zeroed);
        return;
    }
    // First input column read by output column `lo` (0 when the range is empty).
    let x0 = (lo * s + j).saturating_sub(g.pad[2]);
    for (oy, d) in oys.clone().zip(dst[..oys.len() * g.ow].chunks_exact_mut(g.ow)) {
        let iy = (oy * s + i) as isize - g.pad[0] as isize;
        if iy < 0 || iy >= g.h as isize || lo == hi {
            if !padding_zeroed {
                d.fill(0.0);
            }
            continue;
        }
        if !padding_zeroed {
            d[..lo].fill(0.0);
            d[hi..].fill(0.0);
        }
        let src = &xp[iy as usize * g.w..][..g.w];
        let mid = &mut d[lo..hi];
        if s == 1 {
            copy_row(mid, &src[x0..x0 + mid.len()]);
        } else {
            for (k, v) in mid.iter_mut().enumerate() {
                *v = src[x0 + k * s];
            }
        }
    }
}

/// [`im2col_row_band`] for a stride-1 convolution whose output rows are as wide as its input
/// rows (`W' = W`: the zoo's "same" 3×3 layers and the small planes of ResNet-20 and ResNet-18's
/// last stage): then the valid output rows of tap `(i, j)` are the input plane shifted by
/// `(i - pt)·W + (j - pl)` elements, so they are one contiguous copy, after which the edge
/// columns that read the padding (`ox < lo` or `ox ≥ hi`: the copy put the neighbouring row's
/// values there) are set to zero. One copy per band instead of one per output row of 7 to 32
/// floats (ResNet-20's 8×8 and 32×32 planes, ResNet-18's 7×7). Rows that read the padding are
/// zero-filled unless `padding_zeroed`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn im2col_rows_shifted(
    g: &Geom,
    xp: &[f32],
    i: usize,
    j: usize,
    (lo, hi): (usize, usize),
    oys: std::ops::Range<usize>,
    dst: &mut [f32],
    padding_zeroed: bool,
) {
    let w = g.w;
    let dst = &mut dst[..oys.len() * w];
    // Output rows `oy` whose input row `oy + i - pt` lies inside the plane.
    let first = (g.pad[0].saturating_sub(i)).clamp(oys.start, oys.end);
    let last = (g.h + g.pad[0]).saturating_sub(i).clamp(first, oys.end);
    if !padding_zeroed {
        dst[..(first - oys.start) * w].fill(0.0);
        dst[(last - oys.start) * w..].fill(0.0);
    }
    if first == last {
        return;
    }
    // dst[k] = xp[k + shift] for the valid rows, clipped to the plane at both ends (the clipped
    // elements are edge columns, zeroed below).
    let shift = ((first + i) * w + j) as isize - (g.pad[0] * w + g.pad[2]) as isize;
    let (a, b) = ((first - oys.start) * w, (last - oys.start) * w);
    let skip_front = (-shift).max(0) as usize;
    let src_start = (shift + skip_front as isize) as usize;
    let len = (b - a - skip_front).min(xp.len().saturating_sub(src_start));
    copy_row(&mut dst[a + skip_front..a + skip_front + len], &xp[src_start..src_start + len]);
    for row in dst[a..b].chunks_exact_mut(w) {
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
    }
}

/// `dst.copy_from_slice(src)` for the short rows of im2col (7 to 112 floats on the zoo's planes)
/// without a call to `memcpy` per row: fixed-size copies of 8 (the last one overlapping the
/// one before it), or two overlapping copies of 4 below 8 floats. The `memcpy` calls, mostly
/// for 32 to 128 bytes, took 3.75% of a ResNet-20 retrain step's samples (`perf`), most of it
/// in the call; with this 0.14%, and im2col itself 5.0 → 7.35% (net about 1%; 2026-12-07).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_row: lengths differ");
    if n >= 8 {
        let mut k = 0;
        while k + 8 <= n {
            dst[k..k + 8].copy_from_slice(&src[k..k + 8]);
            k += 8;
        }
        if k < n {
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        // Element by element, unrolled (a loop here would be turned back into `memcpy`).
        if n > 0 {
            dst[0] = src[0];
        }
        if n > 1 {
            dst[1] = src[1];
        }
        if n > 2 {
            dst[2] = src[2];
        }
    }
}

/// The adjoint of [`im2col`]: `dx[c][iy][ix] += Σ dcols[...]` over the windows that read it,
/// into a `dx` the caller has zeroed (the backward's output starts zeroed: no second fill).
fn col2im(g: &Geom, dcols: &[f32], dx: &mut [f32]) {
    let (hw, plane) = (g.hw_out(), g.h * g.w);
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &dcols[((c * g.kh + i) * g.kw + j) * hw..][..hw];
                col2im_row(g, row, i, j, &mut dx[c * plane..][..plane]);
            }
        }
    }
}

/// The adjoint of [`im2col_row`]: `xp[iy][ix] += row[...]` for kernel tap `(i, j)` into one
/// input plane's gradient (`h × w`), over the output rows in order. Shared by [`col2im`] and the
/// batched products' `col2im`.
#[inline(always)]
pub(super) fn col2im_row(g: &Geom, row: &[f32], i: usize, j: usize, xp: &mut [f32]) {
    let s = g.stride;
    let (lo, hi) = valid_cols(g, j);
    if lo == hi {
        return;
    }
    let x0 = lo * s + j - g.pad[2];
    for oy in 0..g.oh {
        let iy = (oy * s + i) as isize - g.pad[0] as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        let dst = &mut xp[iy as usize * g.w..][..g.w];
        let mid = &row[oy * g.ow + lo..oy * g.ow + hi];
        if s == 1 {
            for (d, &v) in dst[x0..x0 + mid.len()].iter_mut().zip(mid) {
                *d += v;
            }
        } else {
            for (k, &v) in mid.iter().enumerate() {
                dst[x0 + k * s] += v;
            }
        }
    }
}

/// `dst[c][r] = src[r][c]` for a row-major `rows × cols` source. With AVX2 the full 8 × 8
/// blocks go through registers ([`transpose_avx2`]; the scalar tiles were 4-5% of a ResNet-20
/// step, mostly the transposed forward's `yᵀ → y`), and the edges through the scalar tiles; it
/// only moves values, so both paths give the same result.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose: slices shorter than {rows}x{cols}");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: AVX2 is present, and the asserted lengths cover every 8 × 8 block below.
        unsafe { transpose_avx2(src, rows, cols, r8, c8, dst) };
        transpose_tiles(src, rows, cols, dst, 0..r8, c8..cols);
        transpose_tiles(src, rows, cols, dst, r8..rows, 0..cols);
        return;
    }
    transpose_tiles(src, rows, cols, dst, 0..rows, 0..cols);
}

/// The scalar [`transpose`] of the source rows `rr` and columns `cc`, in square tiles so both
/// sides stay in cache (a plain strided scatter of a ResNet-18 dW (512 × 4608) was 17% of a
/// retrain step).
fn transpose_tiles(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    rr: std::ops::Range<usize>,
    cc: std::ops::Range<usize>,
) {
    const TILE: usize = 32;
    for r0 in rr.clone().step_by(TILE) {
        for c0 in cc.clone().step_by(TILE) {
            for r in r0..(r0 + TILE).min(rr.end) {
                for c in c0..(c0 + TILE).min(cc.end) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// The 8 × 8 blocks of [`transpose`] in the first `r8` rows and `c8` columns (multiples of 8),
/// each loaded as 8 rows, transposed in registers (unpack, shuffle, lane permute) and stored as
/// 8 rows of the destination.
///
/// # Safety
/// AVX2 must be present, and `src`/`dst` must hold `rows · cols` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(src: &[f32], rows: usize, cols: usize, r8: usize, c8: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            // SAFETY (whole block): rows r0..r0+8 ≤ rows, columns c0..c0+8 ≤ cols, so every
            // load reads inside `src` and every store writes inside `dst` (rows · cols each).
            let row = sp.add(r0 * cols + c0);
            let r0v = _mm256_loadu_ps(row);
            let r1 = _mm256_loadu_ps(row.add(cols));
            let r2 = _mm256_loadu_ps(row.add(2 * cols));
            let r3 = _mm256_loadu_ps(row.add(3 * cols));
            let r4 = _mm256_loadu_ps(row.add(4 * cols));
            let r5 = _mm256_loadu_ps(row.add(5 * cols));
            let r6 = _mm256_loadu_ps(row.add(6 * cols));
            let r7 = _mm256_loadu_ps(row.add(7 * cols));
            let (t0, t1) = (_mm256_unpacklo_ps(r0v, r1), _mm256_unpackhi_ps(r0v, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
            let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
            let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
            let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
            let out = [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ];
            for (i, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dp.add((c0 + i) * rows + r0), v);
            }
        }
    }
}

/// Row-major `dst[m×n] = (accumulate ? dst : 0) + a[m×k]·b[k×n]`, where `a` and `b` may be
/// given transposed through their strides. With the `openblas` feature, products of at least
/// [`blas::BLAS_MIN_MACS`](super::blas::BLAS_MIN_MACS) multiply-adds go to OpenBLAS (F11).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
) {
    #[cfg(feature = "openblas")]
    if m * n * k >= super::blas::BLAS_MIN_MACS
        && super::blas::sgemm(m, n, k, dst, accumulate, a, a_rs, a_cs, b, b_rs, b_cs)
    {
        return;
    }
    // SAFETY: the caller's shapes and strides address only elements inside the slices, and
    // `dst` is borrowed mutably for the call.
    unsafe {
        gemm_call(m, n, k, dst.as_mut_ptr(), n as isize, accumulate, a.as_ptr(), a_rs, a_cs, b.as_ptr(), b_rs, b_cs)
    }
}

/// One single-threaded `gemm` crate product: row-major `dst[m×n]` (row stride `dst_rs`)
/// `= (accumulate ? dst : 0) + a[m×k] · b[k×n]`, `a` and `b` given by their row and column
/// strides. The one place the convolution calls the `gemm` crate ([`matmul`], and the tiles of
/// the batched products).
///
/// # Safety
/// Every element the shapes and strides address lies inside the allocation behind its pointer,
/// and no other thread reads or writes `dst`'s elements during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_call(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "edmips-conv2d-cpu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1, l2, self.stride, self.pad)?;
        let (x, w) = (cpu_slice(s1, l1, "conv input")?, cpu_slice(s2, l2, "conv kernel")?);
        // SAFETY: every path writes every element: the integer product every row of every
        // column panel (or nothing, when it declines), Winograd's output transforms each plane
        // in full, the batched path's reordering every plane, the per-sample GEMMs each
        // sample's block (no accumulation into `y`).
        let mut y = unsafe { super::output_buffer(g.n * g.o * g.hw_out())? };
        let integer = self.grids.is_some_and(|(gx, gw)| {
            integer_conv::available()
                && integer_conv::applies(&g, &gx, &gw)
                && integer_conv::forward(&g, x, w, &gx, &gw, &mut y)
        });
        if integer {
            // `y` holds the integer product's output.
        } else if let Some(wg) = winograd_of(&g, self.algo, Direction::Forward) {
            winograd::forward(&wg, x, w, &mut y);
        } else if self.algo == ConvAlgo::Im2colPerSample {
            forward_im2col_whole(&g, x, w, &mut y);
        } else if im2col_batched::applies(&g) {
            im2col_batched::forward(&g, x, w, &mut y)?;
        } else {
            forward_im2col(&g, x, w, &mut y);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let input_grad = x.track_op();
        let op = ConvBwdOp { stride: self.stride, pad: self.pad, algo: self.algo, input_grad };
        let packed = x.apply_op3_no_bwd(w, &gy, &op)?;
        if !input_grad {
            return Ok((None, Some(packed.reshape(w.shape())?)));
        }
        let nx = x.elem_count();
        let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = packed.narrow(0, nx, w.elem_count())?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for ConvBwdOp {
    fn name(&self) -> &'static str {
        "edmips-conv2d-cpu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1, l2, self.stride, self.pad)?;
        let (x, w, gy) =
            (cpu_slice(s1, l1, "conv input")?, cpu_slice(s2, l2, "conv kernel")?, cpu_slice(s3, l3, "conv gradient")?);
        let (ck, chw) = (g.ck(), g.c * g.h * g.w);
        // `[dx, dW]`, or `dW` alone when no gradient flows to the input.
        let nx = if self.input_grad { g.n * chw } else { 0 };
        // SAFETY: every element is written below: Winograd overwrites `dx` and `dW`; on the GEMM
        // path each sample's `dx` block is overwritten (pointwise) or zeroed and then
        // accumulated into by `col2im`, and `dW` is the transpose's output.
        let mut out = unsafe { super::output_buffer(nx + g.o * ck)? };
        let (dx, dw) = out.split_at_mut(nx);
        // Each gradient takes Winograd or im2col on its own ([`Direction`]); the im2col ones of
        // a small plane take the whole batch per product and share `dY` by channel (F16).
        let dx_wino = if self.input_grad { winograd_of(&g, self.algo, Direction::InputGrad) } else { None };
        let dw_wino = winograd_of(&g, self.algo, Direction::WeightGrad);
        if let Some(wg) = dx_wino {
            winograd::input_grad(&wg, gy, w, dx);
        }
        if let Some(wg) = dw_wino {
            winograd::weight_grad(&wg, x, gy, dw);
        }
        let dx_im2col = (self.input_grad && dx_wino.is_none()).then_some(dx);
        let dw_im2col = dw_wino.is_none().then_some(dw);
        if self.algo != ConvAlgo::Im2colPerSample && im2col_batched::applies(&g) {
            im2col_batched::backward(&g, x, w, gy, dx_im2col, dw_im2col)?;
        } else {
            if let Some(dx) = dx_im2col {
                input_grad_im2col(&g, w, gy, dx);
            }
            if let Some(dw) = dw_im2col {
                weight_grad_im2col(&g, x, gy, dw);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(nx + g.o * ck)))
    }
}

/// `y` (every element written) of `y = conv(x, w)` by im2col and one GEMM per sample, in
/// parallel over the samples; below [`TRANSPOSED_FWD_BELOW_O`] output channels transposed,
/// in bands of output rows where one sample's columns are large ([`Geom::band_rows`]).
fn forward_im2col(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32]) {
    match g.band_rows() {
        Some(rows) => forward_im2col_bands(g, x, w, y, rows),
        None => forward_im2col_whole(g, x, w, y),
    }
}

/// [`forward_im2col`] with each sample's columns built whole.
fn forward_im2col_whole(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (ck, hw, chw) = (g.ck(), g.hw_out(), g.c * g.h * g.w);
    y.par_chunks_mut(g.o * hw).enumerate().for_each_init(
        || (g.cols_buffer(), Vec::new()),
        |(buf, yt), (b, yb)| {
            let cols = g.cols(&x[b * chw..][..chw], buf);
            if g.o < TRANSPOSED_FWD_BELOW_O {
                // y_bᵀ[hw, o] = cols_bᵀ[hw, ck] · Wᵀ[ck, o], then y_b = (y_bᵀ)ᵀ.
                yt.resize(hw * g.o, 0.0);
                matmul(hw, g.o, ck, yt, false, cols, 1, hw as isize, w, 1, ck as isize);
                transpose(yt, hw, g.o, yb);
            } else {
                // y_b[o, hw] = W[o, ck] · cols[ck, hw]
                matmul(g.o, hw, ck, yb, false, w, ck as isize, 1, cols, hw as isize, 1);
            }
        },
    );
}

/// [`forward_im2col`] for a layer whose per-sample columns are large ([`Geom::band_rows`]):
/// each sample's im2col and product run in bands of `rows` output rows, `y_b[o, band] =
/// W[o, ck] · cols_band[ck, band]`, so the band's columns are written and read while they are in
/// the core's cache instead of going through memory twice (im2col, then the GEMM's packing).
/// Each output element is the same length-`ck` dot product as unbanded.
fn forward_im2col_bands(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32], rows: usize) {
    let (ck, hw, chw) = (g.ck(), g.hw_out(), g.c * g.h * g.w);
    y.par_chunks_mut(g.o * hw).enumerate().for_each_init(
        || vec![0f32; ck * rows * g.ow],
        |buf, (b, yb)| {
            for oy0 in (0..g.oh).step_by(rows) {
                let oys = oy0..(oy0 + rows).min(g.oh);
                let n = oys.len() * g.ow;
                // The padding moves from band to band: written every time.
                im2col_band(g, &x[b * chw..][..chw], oys, buf, false);
                let dst = &mut yb[oy0 * g.ow..];
                // SAFETY: `w` is `o × ck`, `buf` holds `ck × n`, and `dst` from row `oy0` of the
                // `o × hw` plane block `yb` (row stride `hw`) has `(o - 1)·hw + n` elements:
                // `oy0·ow + n ≤ hw`.
                unsafe {
                    gemm_call(
                        g.o,
                        n,
                        ck,
                        dst.as_mut_ptr(),
                        hw as isize,
                        false,
                        w.as_ptr(),
                        ck as isize,
                        1,
                        buf.as_ptr(),
                        n as isize,
                        1,
                    )
                }
            }
        },
    );
}

/// `dx` (every element written) of `y = conv(x, w)` for the output gradient `gy`, by GEMM and
/// `col2im`: `dx_b = col2im(Wᵀ[ck, o] · gy_b[o, hw])`, independently per sample, into `dx_b`
/// zeroed just before (while it is in cache); 1×1 stride-1 layers need no `col2im`.
fn input_grad_im2col(g: &Geom, w: &[f32], gy: &[f32], dx: &mut [f32]) {
    let (ck, hw, chw) = (g.ck(), g.hw_out(), g.c * g.h * g.w);
    dx.par_chunks_mut(chw).enumerate().for_each_init(
        || g.cols_buffer(),
        |dcols, (b, dxb)| {
            let gyb = &gy[b * g.o * hw..][..g.o * hw];
            if g.pointwise() {
                matmul(ck, hw, g.o, dxb, false, w, 1, ck as isize, gyb, hw as isize, 1);
            } else {
                matmul(ck, hw, g.o, dcols, false, w, 1, ck as isize, gyb, hw as isize, 1);
                dxb.fill(0.0);
                col2im(g, dcols, dxb);
            }
        },
    );
}

/// `dW` (`O × C·kh·kw`, overwritten) of `y = conv(x, w)` for the output gradient `gy`, by
/// im2col and GEMM: `dWᵀ = Σ_b cols_b[ck, hw] · gy_bᵀ[hw, o]`, in sample groups
/// ([`dw_groups`]). The transposed product packs both operands along their contiguous axis:
/// 2.5-3.4x faster than `gy_b · cols_bᵀ` at o = 16 and never slower at the sizes measured.
fn weight_grad_im2col(g: &Geom, x: &[f32], gy: &[f32], dw: &mut [f32]) {
    let (ck, hw, chw) = (g.ck(), g.hw_out(), g.c * g.h * g.w);
    let per = g.n.div_ceil(dw_groups(g.n, ck, g.o)).max(1);
    let partial: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|grp| {
            let mut acc = vec![0f32; ck * g.o];
            let mut buf = g.cols_buffer();
            for b in grp * per..((grp + 1) * per).min(g.n) {
                let cols = g.cols(&x[b * chw..][..chw], &mut buf);
                let gyb = &gy[b * g.o * hw..][..g.o * hw];
                matmul(ck, g.o, hw, &mut acc, b > grp * per, cols, hw as isize, 1, gyb, 1, hw as isize);
            }
            acc
        })
        .collect();
    // Σ over groups in group order, into the first group's buffer (`p_0 + p_1 + ...` per
    // element: contiguous adds, no extra `ck × o` buffer), then one tiled transpose
    // dWᵀ[ck, o] → dW[o, ck].
    let mut groups = partial.into_iter();
    let mut sum_t = groups.next().unwrap_or_else(|| vec![0f32; ck * g.o]);
    for p in groups {
        for (d, &v) in sum_t.iter_mut().zip(&p) {
            *d += v;
        }
    }
    transpose(&sum_t, ck, g.o, dw);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grads(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        stride: usize,
        p: usize,
        ours: bool,
    ) -> Vec<Vec<f32>> {
        let dev = Device::Cpu;
        let xv = Var::from_vec(x.to_vec(), xs.to_vec(), &dev).unwrap();
        let wv = Var::from_vec(w.to_vec(), ws.to_vec(), &dev).unwrap();
        let y = if ours {
            conv2d_cpu(xv.as_tensor(), wv.as_tensor(), stride, [p; 4]).unwrap()
        } else {
            xv.as_tensor().conv2d(wv.as_tensor(), p, stride, 1, 1).unwrap()
        };
        let g = Tensor::from_vec(crate::init::det_fill(y.elem_count(), 9, 1.0), y.shape(), &dev).unwrap();
        let gr = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        vec![flat(&y), flat(gr.get(xv.as_tensor()).unwrap()), flat(gr.get(wv.as_tensor()).unwrap())]
    }

    #[test]
    fn an_input_without_gradient_gets_none_and_the_same_weight_gradient() {
        // The stem's case: the images need no gradient, so `dx` is not computed; `dW` is the
        // same bits as when the input is a variable, on both paths.
        let dev = Device::Cpu;
        for (xs, ws, algo) in [
            ([2, 3, 12, 12], [5, 3, 7, 7], ConvAlgo::Auto),
            ([2, 4, 12, 12], [6, 4, 3, 3], ConvAlgo::Winograd),
            ([2, 4, 12, 12], [6, 4, 3, 3], ConvAlgo::Im2col),
        ] {
            let x = crate::init::det_fill(xs.iter().product(), 1, 1.0);
            let wv = Var::from_vec(crate::init::det_fill(ws.iter().product(), 2, 0.3), ws.to_vec(), &dev).unwrap();
            let dw_of = |xt: &Tensor| {
                let y = conv2d_cpu_with(xt, wv.as_tensor(), 1, [ws[2] / 2; 4], algo).unwrap();
                let g = Tensor::from_vec(crate::init::det_fill(y.elem_count(), 9, 1.0), y.shape(), &dev).unwrap();
                let gr = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                let dw = gr.get(wv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (dw, gr.get(xt).is_some())
            };
            let plain = Tensor::from_vec(x.clone(), xs.to_vec(), &dev).unwrap();
            let var = Var::from_vec(x, xs.to_vec(), &dev).unwrap();
            let (dw_plain, has_dx_plain) = dw_of(&plain);
            let (dw_var, has_dx_var) = dw_of(var.as_tensor());
            assert!(!has_dx_plain && has_dx_var, "{xs:?} {ws:?}");
            assert_eq!(dw_plain, dw_var, "{xs:?} {ws:?} {algo:?}");
        }
    }

    #[test]
    fn matches_candle_convolution_forward_and_backward() {
        for (xs, ws, stride, p) in [
            ([3, 4, 9, 9], [6, 4, 3, 3], 2, 1),
            ([2, 3, 8, 8], [5, 3, 3, 3], 1, 1),
            ([2, 8, 7, 7], [4, 8, 1, 1], 2, 0),
            ([1, 2, 11, 11], [3, 2, 5, 5], 1, 2),
            ([2, 3, 13, 13], [4, 3, 7, 7], 2, 3),
            ([3, 5, 6, 6], [7, 5, 1, 1], 1, 0),
            ([2, 3, 10, 10], [4, 3, 3, 3], 3, 2),
            ([2, 2, 5, 5], [3, 2, 3, 3], 2, 4),
            // o ≥ TRANSPOSED_FWD_BELOW_O: the untransposed forward GEMM.
            ([2, 3, 6, 6], [70, 3, 3, 3], 1, 1),
            ([2, 64, 4, 4], [64, 64, 1, 1], 1, 0),
            // Products of at least 2^23 multiply-adds: OpenBLAS with the `openblas` feature.
            ([2, 64, 32, 32], [64, 64, 3, 3], 1, 1),
        ] {
            let x = crate::init::det_fill(xs.iter().product(), 1, 1.0);
            let w = crate::init::det_fill(ws.iter().product(), 2, 0.3);
            let ours = grads(&x, xs, &w, ws, stride, p, true);
            let theirs = grads(&x, xs, &w, ws, stride, p, false);
            for (k, what) in ["y", "dx", "dw"].iter().enumerate() {
                assert_eq!(ours[k].len(), theirs[k].len(), "{what} size for {xs:?} {ws:?}");
                let err = ours[k].iter().zip(&theirs[k]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err < 1e-4, "{what} differs by {err} for {xs:?} {ws:?} s{stride} p{p}");
            }
        }
    }

    /// The per-element im2col this file used before the edge/middle split: the slow path the
    /// fast one replaces.
    fn im2col_naive(g: &Geom, x: &[f32]) -> Vec<f32> {
        let hw = g.hw_out();
        let mut cols = vec![f32::NAN; g.ck() * hw];
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = (oy * g.stride + i) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride + j) as isize - g.pad[2] as isize;
                            let inside = iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                            cols[((c * g.kh + i) * g.kw + j) * hw + oy * g.ow + ox] =
                                if inside { x[(c * g.h + iy as usize) * g.w + ix as usize] } else { 0.0 };
                        }
                    }
                }
            }
        }
        cols
    }

    /// im2col and col2im against the per-element versions, bitwise, on strides 1-3, square and
    /// rectangular kernels, asymmetric padding wider than the kernel, and windows that read
    /// only padding.
    #[test]
    fn im2col_and_col2im_match_the_per_element_versions() {
        let mut cases = 0;
        for (c, h, w) in [(2, 7, 9), (1, 5, 4), (3, 8, 8)] {
            for (kh, kw) in [(3, 3), (1, 1), (1, 7), (5, 2)] {
                for stride in 1..=3 {
                    for pad in [[0, 0, 0, 0], [1, 1, 1, 1], [0, 2, 3, 1], [4, 0, 0, 5], [1, 0, 2, 0], [0, 2, 0, 1]] {
                        let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
                        if hp < kh || wp < kw {
                            continue;
                        }
                        let g = Geom {
                            n: 1,
                            c,
                            h,
                            w,
                            o: 1,
                            kh,
                            kw,
                            stride,
                            pad,
                            oh: (hp - kh) / stride + 1,
                            ow: (wp - kw) / stride + 1,
                        };
                        let x = crate::init::det_fill(c * h * w, 7, 1.0);
                        let mut cols = vec![f32::NAN; g.ck() * g.hw_out()];
                        im2col(&g, &x, &mut cols, false);
                        let want = im2col_naive(&g, &x);
                        assert_eq!(cols, want, "im2col {g:?}");
                        // A zeroed buffer reused for a second input, padding left unwritten.
                        let x2 = crate::init::det_fill(c * h * w, 17, 1.0);
                        let mut reused = vec![0f32; cols.len()];
                        im2col(&g, &x, &mut reused, true);
                        im2col(&g, &x2, &mut reused, true);
                        assert_eq!(reused, im2col_naive(&g, &x2), "im2col into a reused buffer {g:?}");
                        // Bands of output rows (the banded forward's), fresh and reused buffers.
                        for band in [0..1, 1..g.oh, g.oh / 2..g.oh, 0..g.oh.saturating_sub(1)] {
                            let n = band.len() * g.ow;
                            let want: Vec<f32> = (0..g.ck())
                                .flat_map(|r| want[r * g.hw_out()..][band.start * g.ow..][..n].to_vec())
                                .collect();
                            let mut got = vec![f32::NAN; g.ck() * n];
                            im2col_band(&g, &x, band.clone(), &mut got, false);
                            assert_eq!(got, want, "im2col_band {band:?} {g:?}");
                        }
                        // col2im is the adjoint: a scatter-add along the naive map, in the same
                        // (i, j, oy, ox) order, so the sums agree bitwise.
                        let d = crate::init::det_fill(cols.len(), 8, 1.0);
                        let mut dx = vec![0f32; x.len()];
                        col2im(&g, &d, &mut dx);
                        let mut want_dx = vec![0f32; x.len()];
                        let hw = g.hw_out();
                        for cc in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    for oy in 0..g.oh {
                                        for ox in 0..g.ow {
                                            let iy = (oy * stride + i) as isize - pad[0] as isize;
                                            let ix = (ox * stride + j) as isize - pad[2] as isize;
                                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                                want_dx[(cc * h + iy as usize) * w + ix as usize] +=
                                                    d[((cc * kh + i) * kw + j) * hw + oy * g.ow + ox];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        assert_eq!(dx, want_dx, "col2im {g:?}");
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 100, "only {cases} geometries ran");
    }

    #[test]
    fn weight_gradient_groups_depend_on_shape_and_memory_only() {
        assert_eq!(dw_groups(128, 144, 16), DW_GROUPS);
        assert_eq!(dw_groups(3, 144, 16), 3, "at most one group per sample");
        assert_eq!(dw_groups(32, 4608, 512), 3, "9.4 MB partials: 3 fit in 32 MiB");
        assert_eq!(dw_groups(32, 1 << 20, 1 << 10), 1, "at least one group");
    }

    #[test]
    fn tiled_transpose_matches_the_definition() {
        // Block-aligned, ragged on either side, narrower than a block, ResNet-20's yᵀ shapes.
        for (rows, cols) in [(1, 1), (3, 70), (33, 31), (64, 64), (100, 5), (17, 40), (1024, 16), (144, 16), (9, 8)] {
            let src = crate::init::det_fill(rows * cols, 11, 1.0);
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn weight_gradient_does_not_depend_on_thread_count() {
        // The second geometry's products are large enough for OpenBLAS (`openblas` feature).
        for (xs, ws) in [([13, 3, 10, 10], [4, 3, 3, 3]), ([5, 64, 24, 24], [64, 64, 3, 3])] {
            let x = crate::init::det_fill(xs.iter().product(), 3, 1.0);
            let w = crate::init::det_fill(ws.iter().product(), 4, 0.3);
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| grads(&x, xs, &w, ws, 1, 1, true))
            };
            assert_eq!(run(1), run(3), "{xs:?} {ws:?}");
        }
    }

    fn geom_of(xs: [usize; 4], ws: [usize; 4], stride: usize, p: usize) -> Geom {
        let xl = Layout::contiguous(xs.to_vec());
        let wl = Layout::contiguous(ws.to_vec());
        geom(&xl, &wl, stride, [p; 4]).unwrap()
    }

    /// `y`, `dx` and `dW` of a convolution with any stride and padding, in f64, summed term by
    /// term (the independent reference of the batched path), and each element's sum of |terms|.
    fn direct_f64(g: &Geom, x: &[f32], w: &[f32], gy: &[f32]) -> [(Vec<f64>, Vec<f64>); 3] {
        let z = |n: usize| (vec![0f64; n], vec![0f64; n]);
        let (mut y, mut dx, mut dw) = (z(g.n * g.o * g.hw_out()), z(x.len()), z(w.len()));
        for b in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let yi = ((b * g.o + o) * g.oh + oy) * g.ow + ox;
                        for c in 0..g.c {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride + i) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride + j) as isize - g.pad[2] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((b * g.c + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.c + c) * g.kh + i) * g.kw + j;
                                    let (xv, wv, gv) = (x[xi] as f64, w[wi] as f64, gy[yi] as f64);
                                    for (acc, k, t) in
                                        [(&mut y, yi, xv * wv), (&mut dx, xi, gv * wv), (&mut dw, wi, gv * xv)]
                                    {
                                        acc.0[k] += t;
                                        acc.1[k] += t.abs();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    /// `[y, dx, dW]` of the batched path in chunks of `per` samples (the op's own chunks with
    /// `None`; dx and dW from one `dY`-by-channel per chunk, as the op runs).
    fn batched(g: &Geom, x: &[f32], w: &[f32], gy: &[f32], per: Option<usize>) -> [Vec<f32>; 3] {
        let mut y = vec![f32::NAN; g.n * g.o * g.hw_out()];
        let (mut dx, mut dw) = (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()]);
        let per = per.unwrap_or_else(|| im2col_batched::samples_per_chunk(g));
        im2col_batched::forward_in_chunks(g, x, w, &mut y, per).unwrap();
        im2col_batched::backward_in_chunks(g, x, w, gy, Some(&mut dx), Some(&mut dw), per).unwrap();
        [y, dx, dw]
    }

    /// Geometries of the batched path (many output channels on a small plane, as ResNet-18's
    /// 7×7 layers): 3×3, strided, 1×1 strided and unstrided, a 5×5 kernel, and products of
    /// several tiles in each direction (o and ck > TILE_M, n·hw > TILE_N).
    const BATCHED_CASES: [([usize; 4], [usize; 4], usize, usize); 7] = [
        ([4, 8, 3, 3], [40, 8, 3, 3], 1, 1),
        ([5, 4, 7, 7], [64, 4, 3, 3], 2, 1),
        ([3, 8, 6, 6], [40, 8, 1, 1], 2, 0),
        ([2, 3, 4, 4], [70, 3, 5, 5], 1, 2),
        ([3, 20, 3, 3], [140, 20, 3, 3], 1, 1),
        ([60, 2, 3, 3], [36, 2, 3, 3], 1, 1),
        ([2, 5, 2, 3], [24, 5, 1, 1], 1, 0),
    ];

    #[test]
    fn batched_small_planes_match_a_direct_f64_convolution_and_the_per_sample_path() {
        for (xs, ws, stride, p) in BATCHED_CASES {
            let g = geom_of(xs, ws, stride, p);
            assert!(im2col_batched::applies(&g), "{xs:?} {ws:?}");
            let x = crate::init::det_fill(xs.iter().product(), 5, 1.0);
            let w = crate::init::det_fill(ws.iter().product(), 6, 0.3);
            let gy = crate::init::det_fill(g.n * g.o * g.hw_out(), 7, 1.0);
            let ours = batched(&g, &x, &w, &gy, None);
            // Chunks of two samples (the last one shorter where n is odd): dW sums the chunks.
            let in_pairs = batched(&g, &x, &w, &gy, Some(2));
            let mut per_sample = [vec![f32::NAN; ours[0].len()], vec![f32::NAN; x.len()], vec![f32::NAN; w.len()]];
            forward_im2col(&g, &x, &w, &mut per_sample[0]);
            input_grad_im2col(&g, &w, &gy, &mut per_sample[1]);
            weight_grad_im2col(&g, &x, &gy, &mut per_sample[2]);
            let want = direct_f64(&g, &x, &w, &gy);
            for (k, what) in ["y", "dx", "dW"].iter().enumerate() {
                for (i, ((&a, &b), (v, mag))) in
                    ours[k].iter().zip(&per_sample[k]).zip(want[k].0.iter().zip(&want[k].1)).enumerate()
                {
                    let tol = 2e-6 * mag.max(1e-3);
                    assert!((a as f64 - v).abs() <= tol, "{what}[{i}] {a} vs f64 {v} for {xs:?} {ws:?}");
                    assert!((a as f64 - b as f64).abs() <= 2.0 * tol, "{what}[{i}] {a} vs per-sample {b}");
                    let c = in_pairs[k][i];
                    assert!((a as f64 - c as f64).abs() <= 2.0 * tol, "{what}[{i}] {a} vs in pairs {c}");
                }
            }
        }
    }

    #[test]
    fn batched_path_does_not_depend_on_thread_count_and_the_op_takes_it() {
        for (xs, ws, stride, p) in BATCHED_CASES {
            let g = geom_of(xs, ws, stride, p);
            let x = crate::init::det_fill(xs.iter().product(), 8, 1.0);
            let w = crate::init::det_fill(ws.iter().product(), 9, 0.3);
            let gy = crate::init::det_fill(g.n * g.o * g.hw_out(), 10, 1.0);
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                pool.install(|| batched(&g, &x, &w, &gy, None))
            };
            let one = run(1);
            assert_eq!(one, run(3), "{xs:?} {ws:?}");
            // The op (im2col algorithm) gives these very bits.
            let dev = Device::Cpu;
            let (xv, wv) = (
                Var::from_vec(x.clone(), xs.to_vec(), &dev).unwrap(),
                Var::from_vec(w.clone(), ws.to_vec(), &dev).unwrap(),
            );
            let y = conv2d_cpu_with(xv.as_tensor(), wv.as_tensor(), stride, [p; 4], ConvAlgo::Im2col).unwrap();
            let gt = Tensor::from_vec(gy.clone(), y.shape(), &dev).unwrap();
            let gr = y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&y), one[0], "{xs:?} {ws:?}");
            assert_eq!(flat(gr.get(xv.as_tensor()).unwrap()), one[1], "{xs:?} {ws:?}");
            assert_eq!(flat(gr.get(wv.as_tensor()).unwrap()), one[2], "{xs:?} {ws:?}");
            // ... and `Im2colPerSample` the per-sample path's.
            let y = conv2d_cpu_with(xv.as_tensor(), wv.as_tensor(), stride, [p; 4], ConvAlgo::Im2colPerSample).unwrap();
            let mut per_sample = vec![f32::NAN; y.elem_count()];
            forward_im2col(&g, &x, &w, &mut per_sample);
            assert_eq!(flat(&y), per_sample, "{xs:?} {ws:?}");
        }
    }

    #[test]
    fn the_banded_forward_matches_a_direct_f64_convolution_and_the_whole_columns() {
        // ResNet-18's stem: 7.4 MB of columns per sample, bands of 5 output rows (22 full, one
        // of 2). Other geometries keep whole columns.
        let g = geom_of([1, 3, 224, 224], [64, 3, 7, 7], 2, 3);
        assert_eq!(g.band_rows(), Some(5));
        for (xs, ws, s, p) in [([8, 64, 56, 56], [128, 64, 3, 3], 2, 1), ([8, 16, 224, 224], [16, 16, 3, 3], 1, 1)] {
            assert_eq!(geom_of(xs, ws, s, p).band_rows(), None, "{xs:?} {ws:?}");
        }
        let x = crate::init::det_fill(3 * 224 * 224, 11, 1.0);
        let w = crate::init::det_fill(64 * 3 * 49, 12, 0.3);
        let gy = vec![0f32; 64 * g.hw_out()];
        let run = |t: usize, banded: bool| {
            let mut y = vec![f32::NAN; 64 * g.hw_out()];
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| {
                if banded {
                    forward_im2col(&g, &x, &w, &mut y)
                } else {
                    forward_im2col_whole(&g, &x, &w, &mut y)
                }
            });
            y
        };
        let ours = run(1, true);
        assert_eq!(ours, run(3, true), "thread count");
        let whole = run(1, false);
        let [(want, mag), ..] = direct_f64(&g, &x, &w, &gy);
        for (i, ((&a, &b), (v, m))) in ours.iter().zip(&whole).zip(want.iter().zip(&mag)).enumerate() {
            let tol = 2e-6 * m.max(1e-3);
            assert!((a as f64 - v).abs() <= tol, "y[{i}] {a} vs f64 {v}");
            assert!((a - b).abs() as f64 <= 2.0 * tol, "y[{i}] {a} vs whole columns {b}");
        }
    }

    #[test]
    fn copy_row_copies_every_length() {
        let src: Vec<f32> = (0..40).map(|v| v as f32 + 0.5).collect();
        for n in 0..=40 {
            let mut dst = vec![f32::NAN; n + 1];
            copy_row(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n], "length {n}");
            assert!(dst[n].is_nan(), "length {n}: wrote past the end");
        }
    }

    #[test]
    fn batched_chunks_are_whole_samples_under_the_byte_bound() {
        // ResNet-18 layer 4 at batch 8 is one chunk; at batch 256 its 231 MB of columns are cut
        // into chunks of 37 samples (4608 · 49 · 4 B = 903 KB each, 32 MiB at most).
        assert_eq!(im2col_batched::samples_per_chunk(&geom_of([8, 512, 7, 7], [512, 512, 3, 3], 1, 1)), 8);
        assert_eq!(im2col_batched::samples_per_chunk(&geom_of([256, 512, 7, 7], [512, 512, 3, 3], 1, 1)), 37);
    }

    #[test]
    fn the_batched_path_takes_small_planes_of_several_samples_only() {
        // ResNet-18's 512-channel 7×7 layers, the strided 3×3 and 1×1 into them; not its
        // 14×14 or 28×28 layers, not ResNet-20's 8×8 ones, not a single sample.
        for (xs, ws, s, p, want) in [
            ([8, 512, 7, 7], [512, 512, 3, 3], 1, 1, true),
            ([8, 256, 14, 14], [512, 256, 3, 3], 2, 1, true),
            ([8, 256, 14, 14], [512, 256, 1, 1], 2, 0, true),
            ([8, 128, 28, 28], [256, 128, 3, 3], 2, 1, false),
            ([8, 128, 28, 28], [128, 128, 3, 3], 1, 1, false),
            ([128, 64, 8, 8], [64, 64, 3, 3], 1, 1, false),
            ([1, 512, 7, 7], [512, 512, 3, 3], 1, 1, false),
        ] {
            assert_eq!(im2col_batched::applies(&geom_of(xs, ws, s, p)), want, "{xs:?} {ws:?} s{s}");
        }
    }
}
