//! The forward of a convolution whose two operands lie on integer grids, as an exact integer
//! product (decisions F18).
//!
//! In retraining, a quantized conv computes `conv(Q_a(x), Q_w(W))` where both quantizers are
//! uniform: every activation is `a·s_a` and every weight `b·s_w` for small integers `a`
//! (unsigned) and `b` (signed). The sum `Σ a·b` is then an integer, computed here exactly with
//! the processor's 8-bit dot-product instruction (AVX-512 VNNI `vpdpbusd`: 64 multiply-adds
//! per instruction, four times the f32 FMA's 16) into 32-bit accumulators, and the output is
//! `f32(Σ a·b) · f32(s_a·s_w)`. The f32 path it replaces rounds every product and partial sum;
//! this one rounds twice in all (the sum above 2^24 and the product with the scale), so it is
//! the exact convolution of the quantized operands to within those two roundings, and, being
//! integer arithmetic, does not depend on the order of the sums or on the thread count.
//!
//! The grids come from the quantizers' own description ([`Quantizer::export_form`], the one
//! export writes): a [`UniformQuant`] with an integer zero point gives codes `q − z` on the step
//! `s`, one with a half-integer zero point (the Gaussian weight quantizer's mid-rise levels
//! `±(k + ½)·s`) codes `2(q − z)` on the step `s/2`. The conversion to codes checks every value
//! (`|v/s − round(v/s)| ≤ 2^-10` and inside the code range); a tensor that is not on its grid
//! (a quantizer whose description is off, NaN or infinity after a diverged step) makes the
//! forward take the f32 path instead, so the result is never silently different.
//!
//! Layout: the input codes are packed four channels to a 32-bit word, `[n, ⌈C/4⌉, H, W]`
//! (the operand order `vpdpbusd` sums in groups of four), the kernel codes
//! `[⌈O/8⌉, ⌈C/4⌉·kh·kw, 8]`; the output columns (`n·H'·W'`, all samples side by side) run in
//! panels of 32, each gathered im2col-style into a `[⌈C/4⌉·kh·kw, 32]` word block and
//! multiplied by every 8-row block of the kernel in an 8 × 32 register tile. Only the forward
//! is integer: the gradients (`dY · Wᵀ`, `colsᵀ · dY`) have an f32 operand and keep the f32
//! path ([`super::conv_cpu`]).
//!
//! [`Quantizer::export_form`]: crate::traits::Quantizer::export_form
//! [`UniformQuant`]: crate::traits::UniformQuant

use rayon::prelude::*;

use super::conv_cpu::{valid_cols, Geom};
use crate::traits::UniformQuant;

/// Output columns per panel (two 16-lane vectors).
const NR: usize = 32;
/// Kernel rows per register tile.
const MR: usize = 8;
/// How far `v / s` may be from its nearest integer for `v` to count as on the grid: far above
/// the f32 rounding of `code · s` (a few ulps of codes up to 255), far below any real
/// off-grid value.
const GRID_TOL: f32 = 1.0 / 1024.0;
/// Units of work the panels are cut into at least, where the kernel has rows to split: a layer
/// with few panels (ResNet-18's 7×7 planes at batch 8: 13) splits its kernel rows as well, so
/// two threads get even shares.
const MIN_UNITS: usize = 48;
/// The narrowest output row the direct blocks ([`direct_rows`]) take: narrower rows would leave
/// most of a panel's [`NR`] columns unused.
const DIRECT_MIN_OW: usize = 24;

/// An integer grid: values `code · scale` with `lo ≤ code ≤ hi`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// The grid's step.
    pub scale: f32,
    /// The smallest code.
    pub lo: i32,
    /// The largest code.
    pub hi: i32,
}

impl Grid {
    /// The grid of a uniform quantizer's outputs `(q − z)·s` for integers `q` in its range:
    /// codes `q − z` on `s` for an integer `z`, codes `2(q − z)` on `s/2` for a half-integer
    /// `z`; `None` for any other zero point, a non-finite or non-positive step, or codes beyond
    /// ±255.
    pub fn of(u: &UniformQuant) -> Option<Grid> {
        let z2 = u.zero_point as f64 * 2.0;
        if !(u.scale.is_finite() && u.scale > 0.0) || z2.fract() != 0.0 || !z2.is_finite() || u.bits > 8 {
            return None;
        }
        let (qlo, qhi) = u.int_range();
        let mult = if z2 % 2.0 == 0.0 { 1 } else { 2 };
        let code = |q: i64| (mult as f64 * (q as f64 - u.zero_point as f64)) as i64;
        let (lo, hi) = (code(qlo), code(qhi));
        let scale = u.scale / mult as f32;
        (lo >= -255 && hi <= 255 && scale.is_normal()).then_some(Grid { scale, lo: lo as i32, hi: hi as i32 })
    }

    /// Whether every value is on this grid as the integer forward checks it: `v / scale`
    /// within 2^-10 of an integer code in `lo..=hi` (a plugin's test that its
    /// [`export_form`](crate::traits::Quantizer::export_form) describes its outputs).
    pub fn holds(&self, values: &[f32]) -> bool {
        let (inv, lo, hi) = (1.0 / self.scale, self.lo as f32, self.hi as f32);
        values.iter().all(|&v| {
            let (t, r) = code_of(v, inv);
            (t - r).abs() <= GRID_TOL && r >= lo && r <= hi
        })
    }
}

/// Whether the integer forward runs on this machine: an x86-64 processor with AVX-512 VNNI
/// (and AVX-512 F/BW), unless the environment sets `EDMIPS_INTEGER_CONV=off` (the switch a
/// side-by-side timing of the two paths in one binary uses); read once per process.
pub fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let wanted = std::env::var("EDMIPS_INTEGER_CONV").map(|v| v.trim() != "off").unwrap_or(true);
        wanted && cfg!(target_endian = "little") && vnni_present()
    })
}

/// Whether the processor has the instructions the kernels use.
fn vnni_present() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `g` with these grids fits the kernels: a kernel of more than one tap (a 1×1 conv
/// is too short a product to pay for converting its whole input: ResNet's strided 1×1
/// downsampling convs took 1.5-1.7x the f32 path's time), activation codes in `0..=255` (unsigned
/// bytes), weight codes in `-128..=127` (signed bytes), and no 32-bit accumulator can overflow.
pub(super) fn applies(g: &Geom, gx: &Grid, gw: &Grid) -> bool {
    let amax = gx.hi.max(0) as u64;
    let wmax = gw.lo.unsigned_abs().max(gw.hi.unsigned_abs()) as u64;
    let k = (g.c.div_ceil(4) * 4 * g.kh * g.kw) as u64;
    g.kh * g.kw > 1 && gx.lo >= 0 && gx.hi <= 255 && gw.lo >= -128 && gw.hi <= 127 && amax * wmax * k < (1u64 << 31)
}

/// How many output rows a panel of direct blocks spans (blocks read in place from the padded
/// input words instead of packed): 1 for rows at least
/// [`DIRECT_MIN_OW`] wide (a run of up to [`NR`] pixels of one row), 2 for rows of 12 to 16
/// pixels (the first 16 columns from one row, the next 16 from the row below), else 0: the
/// blocks are packed.
fn direct_rows(g: &Geom) -> usize {
    match g.ow {
        _ if g.stride != 1 => 0,
        w if w >= DIRECT_MIN_OW => 1,
        12..=16 => 2,
        _ => 0,
    }
}

/// `y` (every element written) of `y = conv(x, w)` for `x` on `gx` and `w` on `gw`, or `false`
/// (with `y` untouched) where a value is off its grid; [`available`] and [`applies`] must hold.
pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], gx: &Grid, gw: &Grid, y: &mut [f32]) -> bool {
    let rows = direct_rows(g);
    let direct = rows > 0;
    let pad = if direct { g.pad } else { [0; 4] };
    let (hp, wp) = (g.h + pad[0] + pad[1], g.w + pad[2] + pad[3]);
    let Some(xw) = input_words(g, x, gx, pad) else { return false };
    let Some(aw) = kernel_words(g, w, gw) else { return false };
    let scale = (gx.scale as f64 * gw.scale as f64) as f32;
    let c4 = g.c.div_ceil(4);
    let k4 = c4 * g.kh * g.kw;
    // Where block row k starts, from the panel's base: the packed block's row, or the input
    // word of tap (i, j') in channel group q relative to the panel's first pixel.
    let offs: Vec<usize> = if direct {
        (0..c4).flat_map(|q| (0..g.kh).flat_map(move |i| (0..g.kw).map(move |j| (q * hp + i) * wp + j))).collect()
    } else {
        (0..k4).map(|k| k * NR).collect()
    };
    // Direct panels: `row_panels` per output row (one row each), or one per pair of rows.
    let (row_panels, row_groups) = if rows == 1 { (g.ow.div_ceil(NR), g.oh) } else { (1, g.oh.div_ceil(2)) };
    // Where a block row's second 16 words start, from its first: the next 16 input words, or
    // the same columns one row down.
    let second = if rows == 2 { wp } else { 16 };
    let nt = g.n * g.hw_out();
    if nt == 0 {
        return true;
    }
    let panels = if direct { g.n * row_groups * row_panels } else { nt.div_ceil(NR) };
    let mblocks = g.o.div_ceil(MR);
    // Kernel-row chunks per panel: enough units for even shares where panels are few.
    let msplit = MIN_UNITS.div_ceil(panels).clamp(1, mblocks.div_ceil(8).max(1));
    let mper = mblocks.div_ceil(msplit);
    let out = SharedOut(y.as_mut_ptr());
    // The packed column blocks of every panel, `[panel][k4][NR]`, built once (in parallel)
    // and shared by the panel's units; none where the blocks are read in place.
    let packed: Vec<u32> = if direct {
        Vec::new()
    } else {
        let mut packed = vec![0u32; panels * k4 * NR];
        packed.par_chunks_mut(k4 * NR).enumerate().for_each_init(Vec::new, |segs, (p, bp)| {
            let cols = p * NR..((p + 1) * NR).min(nt);
            segments(g, cols.clone(), segs);
            pack_panel(g, &xw, segs, cols.len(), bp);
        });
        packed
    };
    (0..panels * msplit).into_par_iter().for_each_init(Vec::new, |segs, unit| {
        let (p, ms) = (unit / msplit, unit % msplit);
        let base = if direct {
            let (b, rest) = (p / (row_groups * row_panels), p % (row_groups * row_panels));
            let (oy, ox0) = (rest / row_panels * rows, (rest % row_panels) * NR);
            segs.clear();
            if rows == 1 {
                segs.push(Seg { j0: 0, len: NR.min(g.ow - ox0), b, oy, ox0 });
            } else {
                for (half, oy) in (oy..(oy + 2).min(g.oh)).enumerate() {
                    segs.push(Seg { j0: 16 * half, len: g.ow, b, oy, ox0: 0 });
                }
            }
            // SAFETY (pointer arithmetic only): the sample's first word plus the pixel's
            // offset in the padded plane lies inside `xw`.
            unsafe { xw.as_ptr().add(b * c4 * hp * wp + oy * wp + ox0) }
        } else {
            segments(g, p * NR..((p + 1) * NR).min(nt), segs);
            packed[p * k4 * NR..].as_ptr()
        };
        let mut tile = [[0i32; NR]; MR];
        for mb in ms * mper..((ms + 1) * mper).min(mblocks) {
            // SAFETY: `available()` held (the caller's contract), `aw` holds `mblocks · k4 ·
            // MR` words; every block row's two runs of 16 words lie inside the panel's
            // packed block or inside `xw`, whose slack covers the runs that pass the last
            // plane's end (direct).
            unsafe { kernel(k4, &aw[mb * k4 * MR..][..k4 * MR], base, &offs, second, &mut tile) };
            // SAFETY: each unit writes the rows of its kernel blocks in its panel's columns,
            // which no other unit writes; every index is inside `y` (`n · O · H'W'`).
            unsafe { out.write_tile(g, mb, segs, &tile, scale) };
        }
    });
    true
}

/// `y`'s pointer, shared by the units that write disjoint elements of it.
struct SharedOut(*mut f32);
// SAFETY: the units write disjoint elements (see `forward`), and `y` outlives the parallel loop.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// Writes rows `mb·MR ..` (those below `O`) of `tile` to the panel's columns, scaled.
    ///
    /// # Safety
    /// No other thread writes these elements during the call, and `segs` describe columns of `g`.
    unsafe fn write_tile(&self, g: &Geom, mb: usize, segs: &[Seg], tile: &[[i32; NR]; MR], scale: f32) {
        let hw = g.hw_out();
        for (r, row) in tile.iter().enumerate().take(g.o.saturating_sub(mb * MR).min(MR)) {
            let o = mb * MR + r;
            for s in segs {
                let base = (s.b * g.o + o) * hw + s.oy * g.ow + s.ox0;
                for t in 0..s.len {
                    // SAFETY: the caller's contract; `base + t < n · O · H'W'`.
                    unsafe { *self.0.add(base + t) = row[s.j0 + t] as f32 * scale };
                }
            }
        }
    }
}

/// A run of a panel's columns within one output row: columns `j0 .. j0 + len` of the panel are
/// output pixels `(oy, ox0 ..)` of sample `b`.
#[derive(Debug, Clone, Copy)]
struct Seg {
    j0: usize,
    len: usize,
    b: usize,
    oy: usize,
    ox0: usize,
}

/// The runs of the global output columns `cols` (sample-major, then row, then column).
fn segments(g: &Geom, cols: std::ops::Range<usize>, segs: &mut Vec<Seg>) {
    segs.clear();
    let (hw, start) = (g.hw_out(), cols.start);
    let mut c = cols.start;
    while c < cols.end {
        let (b, pix) = (c / hw, c % hw);
        let (oy, ox0) = (pix / g.ow, pix % g.ow);
        let len = (g.ow - ox0).min(cols.end - c);
        segs.push(Seg { j0: c - start, len, b, oy, ox0 });
        c += len;
    }
}

/// The panel's column block `bp[k4][NR]` from the input words: entry `(k, j)` with
/// `k = (q·kh + i)·kw + j'` is the word of channels `4q..4q+4` at the input pixel column `j`
/// reads through kernel tap `(i, j')` (zero in the padding and past the last column).
fn pack_panel(g: &Geom, xw: &[u32], segs: &[Seg], ncols: usize, bp: &mut [u32]) {
    let (c4, s) = (g.c.div_ceil(4), g.stride);
    let plane = g.h * g.w;
    for q in 0..c4 {
        for i in 0..g.kh {
            for jj in 0..g.kw {
                let k = (q * g.kh + i) * g.kw + jj;
                let dst = &mut bp[k * NR..][..NR];
                // The output columns whose tap-(i, jj) input column lies inside the row.
                let (vlo, vhi) = valid_cols(g, jj);
                for sg in segs {
                    let d = &mut dst[sg.j0..][..sg.len];
                    let iy = (sg.oy * s + i) as isize - g.pad[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        d.fill(0);
                        continue;
                    }
                    let row = &xw[(sg.b * c4 + q) * plane + iy as usize * g.w..][..g.w];
                    // Entry t is output column ox0 + t: inside the row for t in [lo, hi).
                    let lo = vlo.saturating_sub(sg.ox0).min(sg.len);
                    let hi = vhi.saturating_sub(sg.ox0).min(sg.len).max(lo);
                    d[..lo].fill(0);
                    d[hi..].fill(0);
                    if hi > lo {
                        let first = (sg.ox0 + lo) * s + jj - g.pad[2];
                        if s == 1 {
                            d[lo..hi].copy_from_slice(&row[first..first + (hi - lo)]);
                        } else {
                            for (t, v) in d[lo..hi].iter_mut().enumerate() {
                                *v = row[first + t * s];
                            }
                        }
                    }
                }
                dst[ncols..].fill(0);
            }
        }
    }
}

/// The input codes as words `[n, ⌈C/4⌉, H + pt + pb, W + pl + pr]` (zero padding `pad`) and
/// `NR + 2·(W + pl + pr)` words of zero slack (what the direct blocks of the last rows read
/// past the end): byte `j` of a word holds channel `4q + j` (zero past the last
/// channel); `None` if a value is off the grid.
fn input_words(g: &Geom, x: &[f32], gx: &Grid, pad: [usize; 4]) -> Option<Vec<u32>> {
    let (c4, plane) = (g.c.div_ceil(4), g.h * g.w);
    let (hp, wp) = (g.h + pad[0] + pad[1], g.w + pad[2] + pad[3]);
    let len = g.n * c4 * hp * wp;
    let slack = NR + 2 * wp;
    let mut out = vec![0u32; len + slack];
    let zeros = vec![0f32; g.w];
    let ok = out[..len].par_chunks_mut(hp * wp).enumerate().all(|(blk, dst)| {
        let (b, q) = (blk / c4, blk % c4);
        let src = |j: usize, y: usize| -> &[f32] {
            if 4 * q + j < g.c {
                &x[(b * g.c + 4 * q + j) * plane + y * g.w..][..g.w]
            } else {
                &zeros
            }
        };
        (0..g.h).all(|y| {
            let d = &mut dst[(y + pad[0]) * wp + pad[2]..][..g.w];
            // SAFETY: `available()` held (AVX-512 F/BW present).
            unsafe { word_row([src(0, y), src(1, y), src(2, y), src(3, y)], d, gx) }
        })
    });
    ok.then_some(out)
}

/// The kernel codes as words `[⌈O/8⌉, ⌈C/4⌉·kh·kw, 8]`: row `r` of block `mb` at `k =
/// (q·kh + i)·kw + j'` holds the signed bytes of `w[8·mb + r, 4q..4q+4, i, j']` (zero past the
/// last row and channel); `None` if a weight is off the grid.
fn kernel_words(g: &Geom, w: &[f32], gw: &Grid) -> Option<Vec<u32>> {
    let (c4, taps) = (g.c.div_ceil(4), g.kh * g.kw);
    let (k4, row_len) = (c4 * taps, g.c * taps);
    let mut out = vec![0u32; g.o.div_ceil(MR) * k4 * MR];
    let ok = out.par_chunks_mut(k4 * MR).enumerate().all(|(mb, blk)| {
        let mut codes = vec![0u8; row_len];
        // One row's codes by tap, `[taps][4·⌈C/4⌉]`: four channels of a tap are then one word.
        let mut by_tap = vec![0u8; taps * 4 * c4];
        for r in 0..MR.min(g.o - mb * MR) {
            // SAFETY: `available()` held (AVX-512 F/BW present).
            if !unsafe { byte_codes(&w[(mb * MR + r) * row_len..][..row_len], &mut codes, gw) } {
                return false;
            }
            for (c, row) in codes.chunks_exact(taps).enumerate() {
                for (t, &code) in row.iter().enumerate() {
                    by_tap[t * 4 * c4 + c] = code;
                }
            }
            for q in 0..c4 {
                for t in 0..taps {
                    let word = &by_tap[t * 4 * c4 + 4 * q..][..4];
                    blk[(q * taps + t) * MR + r] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                }
            }
        }
        true
    });
    ok.then_some(out)
}

/// `dst[x] = Σ_j byte(round(p[j][x] / s)) << 8j`: four channels' codes to one word per pixel;
/// `false` if a value is off the grid or outside its code range.
///
/// # Safety
/// AVX-512 F and BW must be present (the loop is compiled for them, so it vectorises).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl"))]
unsafe fn word_row(p: [&[f32]; 4], dst: &mut [u32], grid: &Grid) -> bool {
    let (inv, lo, hi) = (1.0 / grid.scale, grid.lo as f32, grid.hi as f32);
    let n = dst.len();
    let (p0, p1, p2, p3) = (&p[0][..n], &p[1][..n], &p[2][..n], &p[3][..n]);
    let mut ok = true;
    for i in 0..n {
        let mut word = 0u32;
        for (j, v) in [p0[i], p1[i], p2[i], p3[i]].into_iter().enumerate() {
            let (t, r) = code_of(v, inv);
            ok &= (t - r).abs() <= GRID_TOL && r >= lo && r <= hi;
            word |= (byte_of(r, lo, hi) as u32) << (8 * j);
        }
        dst[i] = word;
    }
    ok
}

/// `dst[i] = byte(round(src[i] / s))`; `false` if a value is off the grid or outside its code
/// range.
///
/// # Safety
/// AVX-512 F and BW must be present (the loop is compiled for them, so it vectorises).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl"))]
unsafe fn byte_codes(src: &[f32], dst: &mut [u8], grid: &Grid) -> bool {
    let (inv, lo, hi) = (1.0 / grid.scale, grid.lo as f32, grid.hi as f32);
    let mut ok = true;
    for (d, &v) in dst.iter_mut().zip(src) {
        let (t, r) = code_of(v, inv);
        ok &= (t - r).abs() <= GRID_TOL && r >= lo && r <= hi;
        *d = byte_of(r, lo, hi);
    }
    ok
}

/// The byte of the code `r` (two's complement for a negative one), `r` first clamped to
/// `lo..=hi` (NaN to `lo`): the clamp makes the conversion exact, so it needs no saturating
/// `as` (which does not vectorise); a value the clamp moves fails the caller's check anyway.
#[inline(always)]
fn byte_of(r: f32, lo: f32, hi: f32) -> u8 {
    // SAFETY: after the clamp, `r` is finite and within ±255, inside i32.
    (unsafe { r.max(lo).min(hi).to_int_unchecked::<i32>() }) as u8
}

/// `(v / s, its nearest integer)`, with `v / s` as `v · (1/s)`: a value on the grid is within
/// a few ulps of its code either way, far inside [`GRID_TOL`], and the product vectorises
/// where a division would not keep up.
#[inline(always)]
fn code_of(v: f32, inv: f32) -> (f32, f32) {
    let t = v * inv;
    (t, t.round_ties_even())
}

/// `tile[r][j] = Σ_k dot4(a[k][r], b_k[j])`: the signed kernel bytes of `a` (`[k4][MR]`
/// words) times the unsigned input bytes of the block rows `b_k`, exact in 32 bits; `b_k`'s
/// first 16 words start at `base + offs[k]`, its last 16 `second` words further.
///
/// # Safety
/// AVX-512 F/BW/VNNI must be present; `a` holds `k4 · MR` words, `offs` `k4` entries, and
/// the 16 words from `base + offs[k]` and from `base + offs[k] + second` are readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel(k4: usize, a: &[u32], base: *const u32, offs: &[usize], second: usize, tile: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= k4 * MR && offs.len() >= k4);
    let ap = a.as_ptr() as *const i32;
    let mut acc = [_mm512_setzero_si512(); 2 * MR];
    for (k, &off) in offs[..k4].iter().enumerate() {
        // SAFETY: the caller's contract: the block row and the MR kernel words are readable.
        unsafe {
            let bp = base.add(off);
            let b0 = _mm512_loadu_si512(bp as *const __m512i);
            let b1 = _mm512_loadu_si512(bp.add(second) as *const __m512i);
            for r in 0..MR {
                let av = _mm512_set1_epi32(*ap.add(k * MR + r));
                acc[2 * r] = _mm512_dpbusd_epi32(acc[2 * r], b0, av);
                acc[2 * r + 1] = _mm512_dpbusd_epi32(acc[2 * r + 1], b1, av);
            }
        }
    }
    for (r, row) in tile.iter_mut().enumerate() {
        // SAFETY: each row holds NR = 32 i32, two 16-lane stores.
        unsafe {
            _mm512_storeu_si512(row.as_mut_ptr() as *mut __m512i, acc[2 * r]);
            _mm512_storeu_si512(row.as_mut_ptr().add(16) as *mut __m512i, acc[2 * r + 1]);
        }
    }
}

/// The portable form of [`kernel`] (never called where [`available`] is false; kept so the
/// crate builds on every target).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(k4: usize, a: &[u32], base: *const u32, offs: &[usize], second: usize, tile: &mut [[i32; NR]; MR]) {
    // SAFETY: the caller's contract.
    unsafe { kernel_scalar(k4, a, base, offs, second, tile) }
}

/// The scalar definition of [`kernel`]: byte by byte, unsigned input times signed kernel.
///
/// # Safety
/// As [`kernel`]'s, without the instruction sets.
#[allow(dead_code)]
unsafe fn kernel_scalar(
    k4: usize,
    a: &[u32],
    base: *const u32,
    offs: &[usize],
    second: usize,
    tile: &mut [[i32; NR]; MR],
) {
    for (r, row) in tile.iter_mut().enumerate() {
        for (j, t) in row.iter_mut().enumerate() {
            let mut s = 0i32;
            for (k, &off) in offs[..k4].iter().enumerate() {
                // SAFETY: the caller's contract.
                let bw = unsafe { *base.add(off + if j < 16 { j } else { second + j - 16 }) };
                let aw = a[k * MR + r];
                for byte in 0..4 {
                    s += ((aw >> (8 * byte)) as u8 as i8 as i32) * ((bw >> (8 * byte)) as u8 as i32);
                }
            }
            *t = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::Rounding;

    /// Whether the integer forward runs here; says so on stderr when it does not.
    fn vnni_or_skip() -> bool {
        let on = available();
        if !on {
            eprintln!("skipped: this processor has no AVX-512 VNNI (the integer forward never runs here)");
        }
        on
    }

    /// The 2-bit grids of the small cases: activations `{0..3}·0.5`, weights `{-3..3}·0.25`.
    fn small_grids() -> (Grid, Grid) {
        (Grid { scale: 0.5, lo: 0, hi: 3 }, Grid { scale: 0.25, lo: -3, hi: 3 })
    }

    /// `n` values on `grid` (deterministic codes in its range).
    fn on_grid(n: usize, seed: u64, grid: &Grid) -> Vec<f32> {
        codes(n, seed, grid.lo, grid.hi).iter().map(|&c| c as f32 * grid.scale).collect()
    }

    fn uq(scale: f32, zero_point: f32, bits: u32, signed: bool) -> UniformQuant {
        UniformQuant { scale, zero_point, bits, signed, narrow: false, rounding: Rounding::HalfEven }
    }

    #[test]
    fn grids_of_the_uniform_descriptions() {
        // HWGQ 2 bits: levels {0, s, 2s, 3s}.
        assert_eq!(Grid::of(&uq(0.538, 0.0, 2, false)), Some(Grid { scale: 0.538, lo: 0, hi: 3 }));
        // Gaussian 2 bits: (q - 1.5)·s for q in 0..=3, i.e. ±0.5s, ±1.5s: odd codes on s/2.
        assert_eq!(Grid::of(&uq(0.25, 1.5, 2, false)), Some(Grid { scale: 0.125, lo: -3, hi: 3 }));
        // Signed 4 bits with an integer zero point.
        assert_eq!(Grid::of(&uq(0.1, 0.0, 4, true)), Some(Grid { scale: 0.1, lo: -8, hi: 7 }));
        // No integer grid: a fractional zero point, a bad step, too many bits.
        assert_eq!(Grid::of(&uq(0.1, 0.3, 2, false)), None);
        assert_eq!(Grid::of(&uq(0.0, 0.0, 2, false)), None);
        assert_eq!(Grid::of(&uq(f32::NAN, 0.0, 2, false)), None);
        assert_eq!(Grid::of(&uq(0.1, 0.0, 9, false)), None);
    }

    /// Deterministic codes in `lo..=hi`.
    fn codes(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                lo + ((s >> 33) % (hi - lo + 1) as u64) as i32
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        o: usize,
        k: (usize, usize),
        stride: usize,
        pad: [usize; 4],
    ) -> Geom {
        let oh = (h + pad[0] + pad[1] - k.0) / stride + 1;
        let ow = (w + pad[2] + pad[3] - k.1) / stride + 1;
        Geom { n, c, h, w, o, kh: k.0, kw: k.1, stride, pad, oh, ow }
    }

    /// The exact integer convolution of the codes, then `f32(sum) · scale` as the kernel's
    /// epilogue computes it.
    fn reference(g: &Geom, xc: &[i32], wc: &[i32], scale: f32) -> Vec<f32> {
        let mut y = vec![0f32; g.n * g.o * g.hw_out()];
        for b in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0i64;
                        for c in 0..g.c {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride + i) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride + j) as isize - g.pad[2] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        s += (xc[((b * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                                            * wc[((o * g.c + c) * g.kh + i) * g.kw + j])
                                            as i64;
                                    }
                                }
                            }
                        }
                        y[((b * g.o + o) * g.oh + oy) * g.ow + ox] = s as f32 * scale;
                    }
                }
            }
        }
        y
    }

    /// Every panel layout: one output row per panel (ow ≥ 24, with the runs that pass a row's
    /// end), pairs of rows (ow 16 and 13, odd heights), packed panels (narrow rows, stride 2,
    /// a rectangular kernel with asymmetric padding); channels and kernel rows that are not
    /// multiples of 4 and 8; the largest codes of both signs.
    #[test]
    fn the_integer_forward_is_the_exact_convolution_of_the_codes() {
        if !vnni_or_skip() {
            return;
        }
        let cases = [
            geom(2, 8, 30, 30, 16, (3, 3), 1, [1; 4]),
            geom(1, 6, 9, 40, 10, (3, 3), 1, [1; 4]),
            geom(3, 4, 16, 16, 8, (3, 3), 1, [1; 4]),
            geom(2, 5, 13, 13, 9, (3, 3), 1, [1; 4]),
            geom(2, 16, 7, 7, 24, (3, 3), 1, [1; 4]),
            geom(2, 12, 14, 14, 16, (3, 3), 2, [1; 4]),
            geom(3, 3, 9, 11, 5, (1, 3), 1, [0, 0, 2, 0]),
            geom(1, 4, 8, 8, 8, (2, 2), 2, [0; 4]),
        ];
        for (idx, g) in cases.iter().enumerate() {
            for (gx, gw) in [
                (Grid { scale: 0.538, lo: 0, hi: 3 }, Grid { scale: 0.0625, lo: -3, hi: 3 }),
                (Grid { scale: 0.25, lo: 0, hi: 255 }, Grid { scale: 0.5, lo: -128, hi: 127 }),
            ] {
                let xc = codes(g.n * g.c * g.h * g.w, 1 + idx as u64, gx.lo, gx.hi);
                let wc = codes(g.o * g.c * g.kh * g.kw, 100 + idx as u64, gw.lo, gw.hi);
                let x: Vec<f32> = xc.iter().map(|&c| c as f32 * gx.scale).collect();
                let w: Vec<f32> = wc.iter().map(|&c| c as f32 * gw.scale).collect();
                assert!(applies(g, &gx, &gw), "case {idx}");
                let scale = (gx.scale as f64 * gw.scale as f64) as f32;
                let want = reference(g, &xc, &wc, scale);
                let mut y = vec![f32::NAN; want.len()];
                assert!(forward(g, &x, &w, &gx, &gw, &mut y), "case {idx}: on the grid");
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "case {idx} {g:?} element {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn values_off_the_grid_or_out_of_range_decline_and_leave_the_output_alone() {
        if !vnni_or_skip() {
            return;
        }
        let g = geom(1, 4, 8, 8, 8, (3, 3), 1, [1; 4]);
        let (gx, gw) = small_grids();
        let (ok_x, ok_w) = (on_grid(256, 1, &gx), on_grid(288, 2, &gw));
        let mut y = vec![7.0f32; 8 * 64];
        assert!(forward(&g, &ok_x, &ok_w, &gx, &gw, &mut y));
        for (what, xv, wv) in [
            ("off-grid input", 0.3f32, None),
            ("input above the range", 2.0, None),
            ("negative input", -0.5, None),
            ("NaN input", f32::NAN, None),
            ("off-grid weight", 0.0, Some(0.1f32)),
            ("weight above the range", 0.0, Some(1.0)),
            ("infinite weight", 0.0, Some(f32::INFINITY)),
        ] {
            let (mut x, mut w) = (ok_x.clone(), ok_w.clone());
            match wv {
                None => x[37] = xv,
                Some(v) => w[101] = v,
            }
            let mut y = vec![7.0f32; 8 * 64];
            assert!(!forward(&g, &x, &w, &gx, &gw, &mut y), "{what}");
            assert!(y.iter().all(|&v| v == 7.0), "{what}: output untouched");
        }
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        if !vnni_or_skip() {
            return;
        }
        let g = geom(0, 4, 8, 8, 8, (3, 3), 1, [1; 4]);
        let (gx, gw) = small_grids();
        assert!(forward(&g, &[], &on_grid(288, 2, &gw), &gx, &gw, &mut []));
    }

    #[test]
    fn the_integer_forward_does_not_depend_on_thread_count() {
        if !vnni_or_skip() {
            return;
        }
        let (gx, gw) = (Grid { scale: 0.538, lo: 0, hi: 15 }, Grid { scale: 0.03, lo: -15, hi: 15 });
        for g in [geom(4, 32, 7, 7, 64, (3, 3), 1, [1; 4]), geom(4, 8, 28, 28, 16, (3, 3), 1, [1; 4])] {
            let (x, w) = (on_grid(g.n * g.c * g.h * g.w, 5, &gx), on_grid(g.o * g.ck(), 6, &gw));
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut y = vec![0f32; g.n * g.o * g.hw_out()];
                assert!(pool.install(|| forward(&g, &x, &w, &gx, &gw, &mut y)));
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(1), run(3), "{g:?}");
        }
    }

    #[test]
    fn the_vnni_kernel_matches_its_scalar_definition() {
        if !vnni_or_skip() {
            return;
        }
        let k4 = 37;
        // Every byte value on both sides: unsigned inputs 0..=255, signed kernel bytes.
        let words = |n: usize, seed: u64| -> Vec<u32> {
            let lo = codes(n, seed, 0, 0xffff);
            let hi = codes(n, seed + 1, 0, 0xffff);
            lo.iter().zip(&hi).map(|(&l, &h)| (h as u32) << 16 | l as u32).collect()
        };
        let mut a = words(k4 * MR, 7);
        let mut b = words(k4 * 64, 9);
        (a[0], a[1], b[0], b[16]) = (0x8080_8080, 0x7f7f_7f7f, 0xffff_ffff, 0xffff_ffff);
        for (second, stride) in [(16usize, 32usize), (40, 64)] {
            let offs: Vec<usize> = (0..k4).map(|k| k * stride).collect();
            let (mut fast, mut slow) = ([[0i32; NR]; MR], [[1i32; NR]; MR]);
            // SAFETY: VNNI present; every row's two runs of 16 words lie inside `b`
            // ((k4 - 1)·64 + 40 + 16 ≤ k4·64).
            unsafe {
                kernel(k4, &a, b.as_ptr(), &offs[..], second, &mut fast);
                kernel_scalar(k4, &a, b.as_ptr(), &offs[..], second, &mut slow);
            }
            assert_eq!(fast, slow, "second run at +{second}");
        }
    }
}
