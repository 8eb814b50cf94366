//! The im2col convolution of small planes with many channels, the whole batch in each product
//! (decisions F16).
//!
//! [`super::conv_cpu`]'s im2col path runs one GEMM per sample. Where the kernel (`O × C·kh·kw`)
//! is at least four times one sample's column block (`O ≥ 4 · H'W'`: ResNet-18's 512-channel
//! 7×7 layers and the strided convs into them) those products are thin (`N` = 49 columns) and
//! each one packs the whole kernel (9.4 MB) again. Here the columns of every sample sit side by
//! side, so each direction is one product with `N` (or `K`) = `batch · H'W'`:
//!
//! * forward: `Y[o, n·hw] = W[o, ck] · cols[ck, n·hw]`, then `Y` back to `[n, o, hw]`;
//! * input gradient: `dcols[ck, n·hw] = Wᵀ · dY[o, n·hw]`, then `col2im` per plane;
//! * weight gradient: `dW[o, ck] = dY[o, n·hw] · colsᵀ`, the whole batch in `K`.
//!
//! The batch is cut into chunks of whole samples whose columns stay under 32 MiB (one chunk up to
//! large batches). The products run in tiles of at most [`TILE_M`] × [`TILE_N`] whose sizes
//! depend on the shapes only, and each tile sums its whole `K` in one product; `dW` adds the
//! chunks in order; so results do not depend on the thread count. Where the kernel is small
//! against the plane (ResNet-20's 8×8 layers) the per-sample products were faster and stay.

use rayon::prelude::*;

use super::conv_cpu::{col2im_row, gemm_call, im2col_row, Geom};

/// The batched path takes a layer whose kernel (`O × C·kh·kw`) is at least this many times one
/// sample's column block (`C·kh·kw × H'W'`), i.e. `O ≥ 4 · H'W'`: there the per-sample GEMMs
/// spend their time packing the kernel once per sample (ResNet-18's 512-channel 7×7 layers:
/// 9.4 MB per sample). Where the kernel is small against the plane (ResNet-20's 64-channel 8×8
/// layers, `O = H'W'`) the per-sample products keep their operands in cache and were faster
/// (measured in whole steps: 8×8 forward 26 → 35 ms per step batched over 128 samples).
const KERNEL_OVER_PLANE: usize = 4;

/// Bytes the column matrix of one batched product may take: the batch is cut into chunks of
/// whole samples below this (shapes only), so a large batch does not make an `im2col` of
/// its own size (a batch-256 ResNet-18 layer-4 would be 231 MB).
const MAX_COLS_BYTES: usize = 32 << 20;

/// Most rows of one product tile ([`matmul_tiled`]).
const TILE_M: usize = 128;
/// Most columns of one product tile ([`matmul_tiled`]).
const TILE_N: usize = 512;

/// Whether `g`'s im2col directions take the batched path: more than one sample, and a kernel
/// at least [`KERNEL_OVER_PLANE`] times a sample's column block.
pub(super) fn applies(g: &Geom) -> bool {
    g.n > 1 && g.o >= KERNEL_OVER_PLANE * g.hw_out()
}

/// Samples per batched product: as many as keep the chunk's columns within
/// [`MAX_COLS_BYTES`], at least one, at most the batch; shapes only.
pub(super) fn samples_per_chunk(g: &Geom) -> usize {
    let per_sample = (g.ck() * g.hw_out() * std::mem::size_of::<f32>()).max(1);
    (MAX_COLS_BYTES / per_sample).clamp(1, g.n.max(1))
}

/// Consecutive sample ranges of `per` samples (the last one shorter).
fn chunks(n: usize, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per = per.max(1);
    (0..n.div_ceil(per)).map(move |k| k * per..((k + 1) * per).min(n))
}

/// The batched forward: `y[n, o, hw]` (every element written) of `conv(x, w)`.
pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32]) -> candle_core::Result<()> {
    forward_in_chunks(g, x, w, y, samples_per_chunk(g))
}

/// [`forward`] in chunks of `per` samples.
pub(super) fn forward_in_chunks(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32], per: usize) -> candle_core::Result<()> {
    let (chw, ohw) = (g.c * g.h * g.w, g.o * g.hw_out());
    for r in chunks(g.n, per) {
        let gc = Geom { n: r.len(), ..*g };
        let (ck, nn) = (gc.ck(), gc.n * gc.hw_out());
        let cols = im2col_all(&gc, &x[r.start * chw..r.end * chw])?;
        // SAFETY: every element of `yt` is written by the tiled product (no accumulation).
        let mut yt = unsafe { super::output_buffer(g.o * nn)? };
        matmul_tiled(g.o, nn, ck, &mut yt, false, w, ck as isize, 1, &cols, nn as isize, 1);
        by_sample(gc.n, g.o, g.hw_out(), &yt, &mut y[r.start * ohw..r.end * ohw]);
    }
    Ok(())
}

/// The batched gradients of `y = conv(x, w)` for the output gradient `gy`: `dx[n, c, h, w]` and
/// `dW[o, ck]`, each where given (every element written). Per chunk, `dY` is laid out by
/// channel once ([`grad_by_channel`]) for both; `dW` sums the chunks in order.
pub(super) fn backward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) -> candle_core::Result<()> {
    backward_in_chunks(g, x, w, gy, dx, dw, samples_per_chunk(g))
}

/// [`backward`] in chunks of `per` samples.
pub(super) fn backward_in_chunks(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
    per: usize,
) -> candle_core::Result<()> {
    let (chw, ohw) = (g.c * g.h * g.w, g.o * g.hw_out());
    for (k, r) in chunks(g.n, per).enumerate() {
        let gc = Geom { n: r.len(), ..*g };
        let gyt = grad_by_channel(&gc, &gy[r.start * ohw..r.end * ohw])?;
        if let Some(dx) = dx.as_deref_mut() {
            input_grad(&gc, w, &gyt, &mut dx[r.start * chw..r.end * chw])?;
        }
        if let Some(dw) = dw.as_deref_mut() {
            weight_grad(&gc, &x[r.start * chw..r.end * chw], &gyt, dw, k > 0)?;
        }
    }
    Ok(())
}

/// `dY` laid out by channel, `[o, n·hw]`: the operand both batched gradients share.
fn grad_by_channel(g: &Geom, gy: &[f32]) -> candle_core::Result<Vec<f32>> {
    let (hw, nn) = (g.hw_out(), g.n * g.hw_out());
    // SAFETY: every row is written in full below, one sample's block after the other.
    let mut gyt = unsafe { super::output_buffer(g.o * nn)? };
    gyt.par_chunks_mut(nn).enumerate().for_each(|(oc, row)| {
        for (b, dst) in row.chunks_exact_mut(hw).enumerate() {
            dst.copy_from_slice(&gy[(b * g.o + oc) * hw..][..hw]);
        }
    });
    Ok(gyt)
}

/// The input gradient of one chunk: `dx[n, c, h, w]` (every element written) from `gyt`.
fn input_grad(g: &Geom, w: &[f32], gyt: &[f32], dx: &mut [f32]) -> candle_core::Result<()> {
    let (ck, nn) = (g.ck(), g.n * g.hw_out());
    // SAFETY: every element of `dcols` is written by the tiled product (no accumulation).
    let mut dcols = unsafe { super::output_buffer(ck * nn)? };
    matmul_tiled(ck, nn, g.o, &mut dcols, false, w, 1, ck as isize, gyt, nn as isize, 1);
    col2im_all(g, &dcols, dx);
    Ok(())
}

/// The weight gradient of one chunk: `dW[o, ck]` overwritten, or added to with `accumulate`.
fn weight_grad(g: &Geom, x: &[f32], gyt: &[f32], dw: &mut [f32], accumulate: bool) -> candle_core::Result<()> {
    let (ck, nn) = (g.ck(), g.n * g.hw_out());
    let cols = im2col_all(g, x)?;
    matmul_tiled(g.o, ck, nn, dw, accumulate, gyt, nn as isize, 1, &cols, 1, nn as isize);
    Ok(())
}

/// `cols[r][b·hw + p]`: row `r = (c·kh + i)·kw + j` of every sample's im2col side by side,
/// `ck × n·hw`, every element written (zero where the window reads the padding). Rows are
/// independent, so they are filled in parallel.
fn im2col_all(g: &Geom, x: &[f32]) -> candle_core::Result<Vec<f32>> {
    let (hw, nn) = (g.hw_out(), g.n * g.hw_out());
    let (plane, chw) = (g.h * g.w, g.c * g.h * g.w);
    // SAFETY: every row below writes each of its `n · hw` elements (`im2col_row` without
    // `padding_zeroed` writes its zeros too).
    let mut cols = unsafe { super::output_buffer(g.ck() * nn)? };
    cols.par_chunks_mut(nn).enumerate().for_each(|(r, row)| {
        let (j, i, c) = (r % g.kw, (r / g.kw) % g.kh, r / (g.kw * g.kh));
        for (b, sample) in row.chunks_exact_mut(hw).enumerate() {
            im2col_row(g, &x[b * chw + c * plane..][..plane], i, j, sample, false);
        }
    });
    Ok(cols)
}

/// The adjoint of [`im2col_all`]: `dx[b][c][iy][ix] = Σ dcols[...]` over the windows that read
/// it, one input plane at a time (in parallel), each zeroed first and accumulated in the
/// `(i, j, oy)` order of the per-sample `col2im`.
fn col2im_all(g: &Geom, dcols: &[f32], dx: &mut [f32]) {
    let (hw, nn) = (g.hw_out(), g.n * g.hw_out());
    dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(bc, plane)| {
        let (b, c) = (bc / g.c, bc % g.c);
        plane.fill(0.0);
        for i in 0..g.kh {
            for j in 0..g.kw {
                col2im_row(g, &dcols[((c * g.kh + i) * g.kw + j) * nn + b * hw..][..hw], i, j, plane);
            }
        }
    });
}

/// `dst[b][oc][p] = src[oc][b·hw + p]`: a `[o, n·hw]` product back to `[n, o, hw]`.
fn by_sample(n: usize, o: usize, hw: usize, src: &[f32], dst: &mut [f32]) {
    let nn = n * hw;
    dst.par_chunks_mut(hw).enumerate().for_each(|(k, d)| {
        let (b, oc) = (k / o, k % o);
        d.copy_from_slice(&src[oc * nn + b * hw..][..hw]);
    });
}

/// The tile sizes of a `len`-long axis cut into at most `most`-long pieces of near-equal
/// length: (pieces, piece length).
fn split(len: usize, most: usize) -> (usize, usize) {
    let pieces = len.div_ceil(most).max(1);
    (pieces, len.div_ceil(pieces))
}

/// A pointer the tiles of [`matmul_tiled`] share: each writes only its own block of rows and
/// columns.
#[derive(Clone, Copy)]
struct TilePtr(*mut f32);
impl TilePtr {
    /// The element `offset` past the start (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` must lie inside the destination.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: the tiles write disjoint blocks of the destination (see `matmul_tiled`).
unsafe impl Send for TilePtr {}
// SAFETY: as above.
unsafe impl Sync for TilePtr {}

/// Row-major `dst[m×n] = (accumulate ? dst : 0) + a[m×k] · b[k×n]` (`a` and `b` strided), as tiles of at
/// most [`TILE_M`] rows and [`TILE_N`] columns run in parallel. The tiling depends on the
/// shapes only and every tile sums its whole `K` in one `gemm` crate call ([`gemm_call`]), so each element's
/// summation is the same on any number of threads.
#[allow(clippy::too_many_arguments)]
fn matmul_tiled(
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
    assert!(dst.len() >= m * n, "matmul_tiled: destination shorter than {m}x{n}");
    let last = |rows: usize, rs: isize, cols: usize, cs: isize| {
        (rows.saturating_sub(1) as isize * rs + cols.saturating_sub(1) as isize * cs) as usize
    };
    assert!(m * k == 0 || last(m, a_rs, k, a_cs) < a.len(), "matmul_tiled: lhs shorter than {m}x{k}");
    assert!(k * n == 0 || last(k, b_rs, n, b_cs) < b.len(), "matmul_tiled: rhs shorter than {k}x{n}");
    let ((tiles_m, tm), (tiles_n, tn)) = (split(m, TILE_M), split(n, TILE_N));
    let out = TilePtr(dst.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(|t| {
        let (r0, c0) = ((t / tiles_n) * tm, (t % tiles_n) * tn);
        let (rows, cols) = (tm.min(m.saturating_sub(r0)), tn.min(n.saturating_sub(c0)));
        if rows == 0 || cols == 0 {
            return;
        }
        // SAFETY: the asserts above keep every operand element of this tile inside `a` and
        // `b`; the tile writes rows `r0..r0+rows`, columns `c0..c0+cols` of `dst`, a block no
        // other tile touches.
        unsafe {
            gemm_call(
                rows,
                cols,
                k,
                out.at(r0 * n + c0),
                n as isize,
                accumulate,
                a.as_ptr().offset(r0 as isize * a_rs),
                a_rs,
                a_cs,
                b.as_ptr().offset(c0 as isize * b_cs),
                b_rs,
                b_cs,
            )
        }
    });
}
