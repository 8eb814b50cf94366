//! The torchvision transforms of the reference, on 8-bit [`Image`]s.
//!
//! | torchvision | here |
//! |---|---|
//! | `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), BILINEAR)` | [`random_resized_crop_params`] + [`crop`] + [`resize`] |
//! | `RandomHorizontalFlip()` | [`hflip`] when `rng.uniform() < 0.5` |
//! | `RandomCrop(size, padding=size/8)` (zero fill) | [`pad`] + [`random_crop_params`] + [`crop`] |
//! | `Resize(short)` | [`resize_short_side`] |
//! | `CenterCrop(size)` | [`center_crop`] |
//! | `ToTensor()` + `Normalize(mean, std)` | [`to_tensor_normalized`] |
//!
//! [`Transform`] strings them together as the reference does, configured by an [`InputSpec`].
//!
//! **Resizing** is PIL's `Image.resize(..., BILINEAR)` algorithm (what torchvision uses on PIL
//! images): a separable triangle filter whose support is scaled by the downscale factor (so
//! downscaling antialiases), weights normalised per output pixel and converted to 22-bit fixed
//! point, the horizontal pass first with its result rounded and clamped to 8 bits, then the
//! vertical pass. It follows `libImaging/Resample.c` step by step, so results should match PIL
//! to the byte; our tests check hand-computed cases, not PIL itself.
//!
//! **Randomness** comes from an [`Rng`] the caller derives per (seed, epoch, sample), drawn in the
//! order: crop parameters, then the flip.

use edmips_core::error::{Error, Result};
use edmips_core::init::Rng;
use edmips_core::traits::backbone::InputSpec;

use super::image::Image;

/// torchvision's `RandomResizedCrop` default scale range.
pub const RRC_SCALE: (f64, f64) = (0.08, 1.0);
/// torchvision's `RandomResizedCrop` default aspect-ratio range.
pub const RRC_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A crop rectangle: top row `i`, left column `j`, height `h`, width `w` (torchvision's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// Top row.
    pub i: usize,
    /// Left column.
    pub j: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// Python's `int(round(x))` (round half to even) for non-negative `x`.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction uniform in
/// `scale` and a log-uniform aspect ratio in `ratio`, `w = round(sqrt(area·r))`,
/// `h = round(sqrt(area/r))`, accepted when it fits, at a uniform position; else the center
/// crop of the whole image clamped to the ratio range.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> CropBox {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(scale.0, scale.1);
        let aspect = rng.uniform_range(lr0, lr1).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
            let (w, h) = (w as usize, h as usize);
            let i = rng.below((height - h + 1) as u64) as usize;
            let j = rng.below((width - w + 1) as u64) as usize;
            return CropBox { i, j, h, w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (min_r, max_r) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < min_r {
        (width, (py_round(width as f64 / min_r) as usize).min(height))
    } else if in_ratio > max_r {
        ((py_round(height as f64 * max_r) as usize).min(width), height)
    } else {
        (width, height)
    };
    CropBox { i: (height - h) / 2, j: (width - w) / 2, h, w }
}

/// torchvision's `RandomCrop.get_params`: a uniform `size`×`size` window of a `width`×`height`
/// image (which must be at least that large).
pub fn random_crop_params(width: usize, height: usize, size: usize, rng: &mut Rng) -> CropBox {
    if width == size && height == size {
        return CropBox { i: 0, j: 0, h: size, w: size };
    }
    let i = rng.below((height - size + 1) as u64) as usize;
    let j = rng.below((width - size + 1) as u64) as usize;
    CropBox { i, j, h: size, w: size }
}

/// The sub-image `b` (which must lie inside `img`).
pub fn crop(img: &Image, b: CropBox) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(b.w * b.h * c);
    for y in b.i..b.i + b.h {
        let start = (y * img.width + b.j) * c;
        data.extend_from_slice(&img.data[start..start + b.w * c]);
    }
    Image { width: b.w, height: b.h, channels: c, data }
}

/// Zero padding: `left`, `top`, `right`, `bottom` pixels.
pub fn pad(img: &Image, left: usize, top: usize, right: usize, bottom: usize) -> Image {
    let (w, h, c) = (img.width + left + right, img.height + top + bottom, img.channels);
    let mut out = Image::zeros(w, h, c);
    for y in 0..img.height {
        let src = y * img.width * c;
        let dst = ((y + top) * w + left) * c;
        out.data[dst..dst + img.width * c].copy_from_slice(&img.data[src..src + img.width * c]);
    }
    out
}

/// Mirror left-right.
pub fn hflip(img: &Image) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks_exact(img.width * c) {
        for px in row.chunks_exact(c).rev() {
            data.extend_from_slice(px);
        }
    }
    Image { data, ..*img }
}

/// torchvision's `CenterCrop(size)`: zero-pads an image smaller than `size` (left/top get
/// `(size - w) // 2`), then crops at `top = int(round((h - size) / 2))`,
/// `left = int(round((w - size) / 2))` (Python rounds halves to even).
pub fn center_crop(img: &Image, size: usize) -> Image {
    let mut img = std::borrow::Cow::Borrowed(img);
    if img.width < size || img.height < size {
        let dw = size.saturating_sub(img.width);
        let dh = size.saturating_sub(img.height);
        img = std::borrow::Cow::Owned(pad(&img, dw / 2, dh / 2, dw.div_ceil(2), dh.div_ceil(2)));
    }
    if img.width == size && img.height == size {
        return img.into_owned();
    }
    let i = py_round((img.height - size) as f64 / 2.0) as usize;
    let j = py_round((img.width - size) as f64 / 2.0) as usize;
    crop(&img, CropBox { i, j, h: size, w: size })
}

/// torchvision's `Resize(size)` with an int: the shorter side becomes `size`, the longer
/// `int(size · long / short)`; then [`resize`].
pub fn resize_short_side(img: &Image, size: usize) -> Image {
    let (w, h) = (img.width, img.height);
    let (ow, oh) = if w <= h { (size, size * h / w) } else { (size * w / h, size) };
    resize(img, ow, oh)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel source ranges and fixed-point weights of PIL's `precompute_coeffs` +
/// `normalize_coeffs_8bpc` for the bilinear (triangle, support 1) filter.
struct Coeffs {
    /// `(first source index, count)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C's (int) truncates
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = (1.0 - t.abs()).max(0.0);
            *kx = w;
            ww += w;
        }
        for (x, &kx) in k.iter().enumerate().take(n) {
            let v = if ww != 0.0 { kx / ww } else { kx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, weights, ksize }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Bilinear resize to `out_w`×`out_h`, antialiased when downscaling (PIL's algorithm, see the
/// [module docs](self)).
pub fn resize(img: &Image, out_w: usize, out_h: usize) -> Image {
    let c = img.channels;
    let mut cur = std::borrow::Cow::Borrowed(img);
    if out_w != img.width {
        let k = coeffs(img.width, out_w);
        let mut out = Image::zeros(out_w, img.height, c);
        for y in 0..img.height {
            let row = &img.data[y * img.width * c..(y + 1) * img.width * c];
            for (xx, &(xmin, n)) in k.bounds.iter().enumerate() {
                let w = &k.weights[xx * k.ksize..xx * k.ksize + n];
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &wx) in w.iter().enumerate() {
                        ss += row[(xmin + x) * c + ch] as i64 * wx as i64;
                    }
                    out.data[(y * out_w + xx) * c + ch] = clip8(ss);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    if out_h != img.height {
        let src = &*cur;
        let k = coeffs(src.height, out_h);
        let stride = src.width * c;
        let mut out = Image::zeros(src.width, out_h, c);
        // Row-wise accumulation (vectorisable); i32 as in PIL: non-negative weights summing to
        // about 2^22 times 255 stay far below 2^31.
        let mut acc = vec![0i32; stride];
        for (yy, &(ymin, n)) in k.bounds.iter().enumerate() {
            let w = &k.weights[yy * k.ksize..yy * k.ksize + n];
            acc.fill(1 << (PRECISION_BITS - 1));
            for (y, &wy) in w.iter().enumerate() {
                let row = &src.data[(ymin + y) * stride..(ymin + y + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v as i32 * wy;
                }
            }
            for (o, &a) in out.data[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
                *o = clip8(a as i64);
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    cur.into_owned()
}

/// torchvision's `ToTensor()` then `Normalize(mean, std)`: writes the CHW planes
/// `(v / 255 - mean[c]) / std[c]` (f32, in that order of operations) into `out`
/// (`channels · height · width` values).
pub fn to_tensor_normalized(img: &Image, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let (c, hw) = (img.channels, img.width * img.height);
    for ch in 0..c {
        let (m, s) = (mean[ch], std[ch]);
        let plane = &mut out[ch * hw..(ch + 1) * hw];
        for (p, o) in plane.iter_mut().enumerate() {
            *o = (img.data[p * c + ch] as f32 / 255.0 - m) / s;
        }
    }
}

/// The train or val pipeline of an [`InputSpec`] (see the [module docs](self) and
/// [`Transform::apply`]).
#[derive(Debug, Clone)]
pub struct Transform {
    /// The input the network expects.
    pub input: InputSpec,
    /// Train (random augmentation) or val (deterministic) pipeline.
    pub train: bool,
}

impl Transform {
    /// A pipeline for `input`; an error if its mean/std do not have one entry per channel or the
    /// sizes are zero.
    pub fn new(input: &InputSpec, train: bool) -> Result<Self> {
        let c = input.channels;
        if c != 1 && c != 3 {
            return Err(Error::Data(format!("input channels must be 1 or 3, found {c}")));
        }
        if input.mean.len() != c || input.std.len() != c {
            return Err(Error::Data(format!(
                "input normalisation needs {c} mean and std values (one per channel), found {} and {}",
                input.mean.len(),
                input.std.len()
            )));
        }
        if input.size == 0 || input.resize == Some(0) {
            return Err(Error::Data("input size and resize must be positive".into()));
        }
        Ok(Transform { input: input.clone(), train })
    }

    /// Values per output image (`channels · size · size`).
    pub fn output_len(&self) -> usize {
        self.input.channels * self.input.size * self.input.size
    }

    /// The geometric part of the pipeline, on an image already converted to
    /// `input.channels` channels. Returns a `size`×`size` image.
    ///
    /// * train, `random_resized_crop`: RandomResizedCrop(size) then the flip;
    /// * train, otherwise: if the image is not `size`×`size`, first `Resize(size)` +
    ///   `CenterCrop(size)` (our addition, so that odd-sized files still work), then zero padding
    ///   of `size / 8` on every side, a random `size` crop and the flip (CIFAR's
    ///   `RandomCrop(32, padding=4)`);
    /// * val: `Resize(resize)` if the spec has a resize, then `CenterCrop(size)`; with no
    ///   resize, an image of the right size is used as it is and any other is resized (short
    ///   side = size) and center cropped.
    pub fn geometry(&self, img: &Image, rng: &mut Rng) -> Image {
        let size = self.input.size;
        if self.train {
            let out = if self.input.random_resized_crop {
                let b = random_resized_crop_params(img.width, img.height, RRC_SCALE, RRC_RATIO, rng);
                let cropped = crop(img, b);
                resize(&cropped, size, size)
            } else {
                let base = std::borrow::Cow::Borrowed(img);
                let base = if img.width != size || img.height != size {
                    std::borrow::Cow::Owned(center_crop(&resize_short_side(img, size), size))
                } else {
                    base
                };
                let p = size / 8;
                let padded = pad(&base, p, p, p, p);
                let b = random_crop_params(padded.width, padded.height, size, rng);
                crop(&padded, b)
            };
            if rng.uniform() < 0.5 {
                hflip(&out)
            } else {
                out
            }
        } else {
            match self.input.resize {
                Some(r) => center_crop(&resize_short_side(img, r), size),
                None if img.width == size && img.height == size => img.clone(),
                None => center_crop(&resize_short_side(img, size), size),
            }
        }
    }

    /// The whole pipeline: channel conversion, [`Transform::geometry`], then
    /// [`to_tensor_normalized`] into `out` (`output_len()` values).
    pub fn apply(&self, img: Image, rng: &mut Rng, out: &mut [f32]) -> Result<()> {
        let img = img.to_channels(self.input.channels)?;
        let g = self.geometry(&img, rng);
        to_tensor_normalized(&g, &self.input.mean, &self.input.std, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Image {
        let mut d = Vec::new();
        for y in 0..h {
            for x in 0..w {
                d.push(f(y, x));
            }
        }
        Image::new(w, h, 1, d).unwrap()
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!([0.5, 1.5, 2.5, 3.5, 2.4, 2.6].map(py_round), [0, 2, 2, 4, 2, 3]);
    }

    #[test]
    fn center_crop_offsets_follow_torchvision_rounding() {
        // h - size = 3 -> round(1.5) = 2; w - size = 5 -> round(2.5) = 2; 1 -> round(0.5) = 0.
        let img = gray(7, 5, |y, x| (y * 10 + x) as u8);
        let c = center_crop(&img, 2);
        assert_eq!(c.data, vec![22, 23, 32, 33]);
        let img = gray(3, 3, |y, x| (y * 10 + x) as u8);
        assert_eq!(center_crop(&img, 2).data, vec![0, 1, 10, 11]);
        // Larger crop than image: zero padding, left/top get (size - w) // 2.
        let img = gray(1, 1, |_, _| 9);
        assert_eq!(center_crop(&img, 3).data, vec![0, 0, 0, 0, 9, 0, 0, 0, 0]);
        let img = gray(1, 1, |_, _| 9);
        assert_eq!(center_crop(&img, 2).data, vec![9, 0, 0, 0]); // left/top pad (2 - 1) // 2 = 0
    }

    #[test]
    fn flip_pad_and_crop() {
        let rgb = Image::new(2, 1, 3, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(hflip(&rgb).data, vec![4, 5, 6, 1, 2, 3]);
        let img = gray(2, 2, |y, x| (1 + y * 2 + x) as u8);
        let p = pad(&img, 1, 0, 0, 1);
        assert_eq!((p.width, p.height), (3, 3));
        assert_eq!(p.data, vec![0, 1, 2, 0, 3, 4, 0, 0, 0]);
        assert_eq!(crop(&p, CropBox { i: 1, j: 1, h: 2, w: 1 }).data, vec![3, 0]);
    }

    #[test]
    fn random_crop_with_padding_stays_in_range_and_covers_all_offsets() {
        let mut rng = Rng::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let b = random_crop_params(40, 40, 32, &mut rng);
            assert!(b.i <= 8 && b.j <= 8 && b.h == 32 && b.w == 32);
            seen.insert((b.i, b.j));
        }
        assert_eq!(seen.len(), 81);
        assert_eq!(random_crop_params(32, 32, 32, &mut rng), CropBox { i: 0, j: 0, h: 32, w: 32 });
    }

    #[test]
    fn random_resized_crop_fallback_and_bounds() {
        // 100x10 with scale (1, 1): every try needs h >= 27 > 10, so the fallback is taken:
        // in_ratio 10 > 4/3 -> h = 10, w = round(10 * 4/3) = 13, i = 0, j = (100 - 13) // 2 = 43.
        let mut rng = Rng::new(1);
        let b = random_resized_crop_params(100, 10, (1.0, 1.0), RRC_RATIO, &mut rng);
        assert_eq!(b, CropBox { i: 0, j: 43, h: 10, w: 13 });
        // Tall image: in_ratio 0.1 < 3/4 -> w = 10, h = round(10 / 0.75) = 13, i = 43.
        let b = random_resized_crop_params(10, 100, (1.0, 1.0), RRC_RATIO, &mut rng);
        assert_eq!(b, CropBox { i: 43, j: 0, h: 13, w: 10 });
        // Square image, scale 1, ratio 1: the whole image.
        let b = random_resized_crop_params(50, 50, (1.0, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!(b, CropBox { i: 0, j: 0, h: 50, w: 50 });
        // Defaults: always inside, area fraction within [0.08, 1] up to rounding.
        for _ in 0..2000 {
            let b = random_resized_crop_params(64, 48, RRC_SCALE, RRC_RATIO, &mut rng);
            assert!(b.i + b.h <= 48 && b.j + b.w <= 64 && b.h > 0 && b.w > 0);
            let r = b.w as f64 / b.h as f64;
            assert!((0.6..=1.5).contains(&r), "{b:?}");
        }
    }

    #[test]
    fn resize_hand_computed_cases() {
        // Upscale 2 -> 4 of [0, 100]: scale 0.5, support 1, centers 0.25, 0.75, 1.25, 1.75;
        // taps run from int(center - 0.5) to int(center + 1.5) (clamped), weight
        // 1 - |x - center + 0.5|, normalised, rounding at the half in 22-bit fixed point:
        // 0.25: only x = 0 -> 0. 0.75: x = 0, 1 with 0.75, 0.25 -> 25. 1.25: 0.25, 0.75 -> 75.
        // 1.75: only x = 1 -> 100.
        let img = gray(2, 1, |_, x| (x * 100) as u8);
        assert_eq!(resize(&img, 4, 1).data, vec![0, 25, 75, 100]);
        // Downscale 4 -> 2 antialiases: scale 2, support 2, center 1: taps x = 0..2 with
        // weights 1 - |x - 1 + 0.5| / 2 = 0.75, 0.75, 0.25 -> 3/7, 3/7, 1/7 of [0, 70, 140] = 50.
        // center 3: taps x = 1..3 with 0.25, 0.75, 0.75 -> (70 + 3·140 + 3·210) / 7 = 160.
        let img = gray(4, 1, |_, x| (x * 70) as u8);
        assert_eq!(resize(&img, 2, 1).data, vec![50, 160]);
        // The vertical pass is the same filter.
        let img = gray(1, 4, |y, _| (y * 70) as u8);
        assert_eq!(resize(&img, 1, 2).data, vec![50, 160]);
        // A constant image stays constant; same size is the identity.
        let img = gray(13, 7, |_, _| 77);
        assert!(resize(&img, 5, 11).data.iter().all(|&v| v == 77));
        let img = gray(3, 2, |y, x| (y * 3 + x) as u8 * 20);
        assert_eq!(resize(&img, 3, 2), img);
    }

    #[test]
    fn resize_short_side_truncates_the_long_side() {
        let img = gray(500, 375, |_, _| 0);
        let r = resize_short_side(&img, 256);
        assert_eq!((r.width, r.height), (341, 256)); // int(256 * 500 / 375) = int(341.33)
        let img = gray(32, 64, |_, _| 0);
        let r = resize_short_side(&img, 16);
        assert_eq!((r.width, r.height), (16, 32));
    }

    #[test]
    fn normalisation_is_chw_and_matches_by_hand() {
        let img = Image::new(2, 1, 3, vec![0, 51, 255, 255, 0, 102]).unwrap();
        let mut out = vec![0f32; 6];
        to_tensor_normalized(&img, &[0.5, 0.0, 0.2], &[0.5, 1.0, 0.4], &mut out);
        // channel planes: R = [0, 255], G = [51, 0], B = [255, 102].
        let want = [-1.0, 1.0, 0.2, 0.0, 2.0, 0.5];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn transform_pipelines_produce_the_input_size() {
        let img = gray(40, 30, |y, x| (x + y) as u8);
        let mut rng = Rng::new(5);
        let t = Transform::new(&InputSpec::imagenet(24, 28), true).unwrap();
        let mut out = vec![0f32; t.output_len()];
        t.apply(img.clone(), &mut rng, &mut out).unwrap();
        let v = Transform::new(&InputSpec::imagenet(24, 28), false).unwrap();
        let g = v.geometry(&img.clone().to_channels(3).unwrap(), &mut rng);
        assert_eq!((g.width, g.height), (24, 24));
        // CIFAR style on a right-sized image: val is the identity, train is a shifted, maybe
        // flipped window with zeros from the padding.
        let spec = InputSpec { channels: 1, mean: vec![0.0], std: vec![1.0], ..InputSpec::cifar(8) };
        let img = gray(8, 8, |_, _| 200);
        let v = Transform::new(&spec, false).unwrap();
        assert_eq!(v.geometry(&img, &mut rng), img);
        let t = Transform::new(&spec, true).unwrap();
        let mut zeros_seen = false;
        for _ in 0..50 {
            let g = t.geometry(&img, &mut rng);
            assert_eq!((g.width, g.height), (8, 8));
            assert!(g.data.iter().all(|&v| v == 0 || v == 200));
            zeros_seen |= g.data.contains(&0);
        }
        assert!(zeros_seen);
        assert!(Transform::new(&InputSpec { mean: vec![0.0], ..InputSpec::cifar(8) }, true).is_err());
    }

    #[test]
    fn flip_happens_about_half_the_time() {
        let spec = InputSpec { channels: 1, mean: vec![0.0], std: vec![1.0], ..InputSpec::cifar(4) };
        let t = Transform::new(&spec, true).unwrap();
        let img = gray(4, 4, |y, x| (1 + y * 4 + x) as u8);
        let mut rng = Rng::new(9);
        let flipped = (0..2000)
            .filter(|_| {
                let g = t.geometry(&img, &mut rng);
                // Padding is 4 / 8 = 0, so the window is the image itself, flipped or not.
                g != img
            })
            .count();
        assert!((900..1100).contains(&flipped), "{flipped}");
    }
}
