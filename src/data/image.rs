//! [`Image`], the decoded 8-bit picture every reader produces, and file decoding.
//!
//! Pixels are interleaved (HWC, row-major), one byte per channel, 1 (grayscale) or 3 (RGB)
//! channels. [`Image::to_channels`] converts between the two the way PIL's `convert` does, so a
//! grayscale or palette file feeds an RGB network and an RGB file a grayscale one.

use std::io::Cursor;
use std::path::Path;

use edmips_core::error::{Error, Result};

/// A decoded 8-bit image, interleaved channels (HWC), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes, pixel `(y, x)` channel `c` at `(y * width + x) * channels + c`.
    pub data: Vec<u8>,
}

impl Image {
    /// An image from its parts; an error if `data` does not hold `width * height * channels` bytes
    /// or `channels` is not 1 or 3.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::Data(format!("image channels must be 1 or 3, found {channels}")));
        }
        if data.len() != width * height * channels {
            return Err(Error::Data(format!(
                "a {width}x{height}x{channels} image needs {} bytes, found {}",
                width * height * channels,
                data.len()
            )));
        }
        Ok(Image { width, height, channels, data })
    }

    /// An all-zero (black) image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Image { width, height, channels, data: vec![0; width * height * channels] }
    }

    /// The byte of pixel `(y, x)`, channel `c`.
    pub fn get(&self, y: usize, x: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// This image with `channels` channels: gray → RGB copies the gray value into R, G and B;
    /// RGB → gray uses PIL's ITU-R 601-2 luma `L = (R·299 + G·587 + B·114) / 1000`, rounded as
    /// PIL does (`(R·19595 + G·38470 + B·7471 + 0x8000) >> 16`).
    pub fn to_channels(self, channels: usize) -> Result<Image> {
        match (self.channels, channels) {
            (a, b) if a == b => Ok(self),
            (1, 3) => {
                let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
                Ok(Image { channels: 3, data, ..self })
            }
            (3, 1) => {
                let data = self
                    .data
                    .chunks_exact(3)
                    .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
                    .collect();
                Ok(Image { channels: 1, data, ..self })
            }
            (_, c) => Err(Error::Data(format!("cannot convert an image to {c} channels (only 1 or 3)"))),
        }
    }
}

/// The image formats this build decodes (the others of [`IMAGE_EXTENSIONS`] are listed but give
/// an error naming the file when met).
pub const DECODABLE_FORMATS: &str = "JPEG, PNG, BMP, PPM/PGM";

/// The file extensions torchvision's `ImageFolder` accepts (`IMG_EXTENSIONS`), compared
/// case-insensitively.
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Reads and decodes the image file at `path`, then converts it to `channels` channels (1 or 3)
/// with [`Image::to_channels`]. Gray, gray+alpha, palette, RGB, RGBA and 16-bit files are
/// accepted (alpha is dropped, 16-bit values are scaled to 8 bits). Errors name the file.
pub fn decode_file(path: &Path, channels: usize) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading image", path, e))?;
    decode_bytes(&bytes, channels).map_err(|m| Error::Data(format!("cannot decode image `{}`: {m}", path.display())))
}

/// Decodes an encoded image held in memory; the error is a message without the file name.
fn decode_bytes(bytes: &[u8], channels: usize) -> std::result::Result<Image, String> {
    let reader = ::image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let format = match reader.format() {
        Some(f) => f,
        None => {
            return Err(format!(
                "its content is not a recognised image format ({} bytes; this build decodes {DECODABLE_FORMATS})",
                bytes.len()
            ))
        }
    };
    if !format.reading_enabled() {
        return Err(format!("{format:?} images are not supported by this build (it decodes {DECODABLE_FORMATS})"));
    }
    let img = reader.decode().map_err(|e| format!("corrupt or unsupported {format:?} data: {e}"))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray_source = !img.color().has_color();
    let out = if gray_source {
        Image { width: w, height: h, channels: 1, data: img.into_luma8().into_raw() }
    } else {
        Image { width: w, height: h, channels: 3, data: img.into_rgb8().into_raw() }
    };
    out.to_channels(channels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("edmips-image-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn gray_rgb_conversion_follows_pil() {
        let g = Image::new(2, 1, 1, vec![7, 200]).unwrap();
        assert_eq!(g.clone().to_channels(3).unwrap().data, vec![7, 7, 7, 200, 200, 200]);
        // PIL: L = (255*19595 + 0x8000) >> 16 = 76 for pure red; 150 green; 29 blue.
        let rgb = Image::new(3, 1, 3, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        assert_eq!(rgb.to_channels(1).unwrap().data, vec![76, 150, 29]);
        assert!(Image::new(2, 2, 3, vec![0; 11]).is_err());
    }

    #[test]
    fn extensions_are_torchvision_s_case_insensitive() {
        for ok in ["a.jpg", "b.JPEG", "c.Png", "d.ppm", "e.bmp", "f.pgm", "g.tif", "h.TIFF", "i.webp"] {
            assert!(has_image_extension(Path::new(ok)), "{ok}");
        }
        for bad in ["a.gif", "b.txt", "c", "d.jpg.bak"] {
            assert!(!has_image_extension(Path::new(bad)), "{bad}");
        }
    }

    /// A 2x1 8-bit palette PNG: palette [(10,20,30), (200,100,0)], pixels [0, 1].
    fn palette_png() -> Vec<u8> {
        use std::io::Write;
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 1, 8, 3, 0, 0, 0]);
        chunk(&mut out, b"PLTE", &[10, 20, 30, 200, 100, 0]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[0, 0, 1]).unwrap();
        chunk(&mut out, b"IDAT", &z.finish().unwrap());
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn png_gray_palette_and_rgba_decode_to_the_requested_channels() {
        let dir = temp_dir("png");
        // 8-bit gray PNG.
        let gray = ::image::GrayImage::from_raw(2, 1, vec![10, 250]).unwrap();
        let p = dir.join("gray.png");
        gray.save(&p).unwrap();
        assert_eq!(decode_file(&p, 1).unwrap().data, vec![10, 250]);
        assert_eq!(decode_file(&p, 3).unwrap().data, vec![10, 10, 10, 250, 250, 250]);
        // RGBA PNG: alpha dropped.
        let rgba = ::image::RgbaImage::from_raw(1, 1, vec![1, 2, 3, 4]).unwrap();
        let p = dir.join("rgba.PNG");
        rgba.save_with_format(&p, ::image::ImageFormat::Png).unwrap();
        let d = decode_file(&p, 3).unwrap();
        assert_eq!((d.width, d.height, d.channels, d.data), (1, 1, 3, vec![1, 2, 3]));
        // Palette PNG (colour type 3), written chunk by chunk.
        let p = dir.join("palette.png");
        std::fs::write(&p, palette_png()).unwrap();
        assert_eq!(decode_file(&p, 3).unwrap().data, vec![10, 20, 30, 200, 100, 0]);
        // PPM and PGM.
        let p = dir.join("x.ppm");
        std::fs::write(&p, b"P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06").unwrap();
        assert_eq!(decode_file(&p, 3).unwrap().data, vec![1, 2, 3, 4, 5, 6]);
        let p = dir.join("x.pgm");
        std::fs::write(&p, b"P5\n2 1\n255\n\x09\x08").unwrap();
        assert_eq!(decode_file(&p, 1).unwrap().channels, 1);
        assert_eq!(decode_file(&p, 3).unwrap().data, vec![9, 9, 9, 8, 8, 8]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn undecodable_files_give_errors_naming_the_file() {
        let dir = temp_dir("bad");
        let p = dir.join("garbage.jpg");
        std::fs::write(&p, b"this is not a jpeg at all").unwrap();
        let e = decode_file(&p, 3).unwrap_err().to_string();
        assert!(e.contains("garbage.jpg") && e.contains("not a recognised image format"), "{e}");
        // A JPEG header followed by garbage.
        let p = dir.join("trunc.jpg");
        std::fs::write(&p, b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00garbage").unwrap();
        let e = decode_file(&p, 3).unwrap_err().to_string();
        assert!(e.contains("trunc.jpg") && e.contains("Jpeg"), "{e}");
        // TIFF magic: recognised but not decodable in this build.
        let p = dir.join("a.tif");
        std::fs::write(&p, b"II*\x00\x08\x00\x00\x00\x00\x00").unwrap();
        let e = decode_file(&p, 3).unwrap_err().to_string();
        assert!(e.contains("a.tif") && e.contains("not supported by this build"), "{e}");
        let e = decode_file(&dir.join("missing.png"), 3).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
