//! The IDX format of MNIST and Fashion-MNIST, plain or gzip'd.
//!
//! Files: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (train) and `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte` (val), each optionally with `.gz` (a gzip'd file is used when the
//! plain one is absent). An IDX file is a big-endian header, `0x00 0x00 <type> <ndim>` then `ndim`
//! u32 sizes, then the data; we read unsigned bytes (type `0x08`): images with 3 dimensions
//! (count, rows, columns), labels with 1. A file shorter or longer than its header says is
//! rejected with the expected and found sizes.
//!
//! Class names: the two data sets have identical file names and sizes, so the path decides: the
//! [Fashion-MNIST names](FASHION_MNIST_CLASSES) when it contains `fashion` (case-insensitive),
//! else the digits `"0"`, `"1"`, … up to the largest label (at least ten).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edmips_core::error::{Error, Result};

use super::{DataFormat, Dataset, Split};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// `dir/name` if it is a file, else `dir/name.gz` if that is.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// Reads `path`, gunzipping it when its name ends in `.gz` (or it starts with the gzip magic).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    gunzip_if_needed(raw, &path.display().to_string())
}

/// Gunzips `raw` if it starts with the gzip magic bytes; `what` names it in errors.
pub fn gunzip_if_needed(raw: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Data(format!("`{what}`: corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header.
    pub dims: Vec<usize>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// Parses an unsigned-byte IDX file with `ndim` dimensions; `what` names it in errors.
pub fn parse(bytes: &[u8], ndim: usize, what: &str) -> Result<IdxArray> {
    let header = 4 + 4 * ndim;
    if bytes.len() < 4 {
        return Err(Error::Data(format!(
            "IDX file `{what}` is truncated: expected at least a {header}-byte header, found {} bytes",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != ndim {
        return Err(Error::Data(format!(
            "`{what}` is not an unsigned-byte IDX file with {ndim} dimension(s): expected magic 00 00 08 {ndim:02x}, \
             found {:02x} {:02x} {:02x} {:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes.len() < header {
        return Err(Error::Data(format!(
            "IDX file `{what}` is truncated: expected a {header}-byte header, found {} bytes",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes([bytes[4 + 4 * d], bytes[5 + 4 * d], bytes[6 + 4 * d], bytes[7 + 4 * d]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        return Err(Error::Data(format!(
            "IDX file `{what}` is {}: its header says {shape} bytes of data, so expected {} bytes, found {}",
            if bytes.len() < header + n { "truncated" } else { "longer than its header says" },
            header + n,
            bytes.len()
        )));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Builds a split from decoded image (3-D) and label (1-D) IDX contents.
pub fn split_from_bytes(
    name: &str,
    images: &[u8],
    labels: &[u8],
    images_what: &str,
    labels_what: &str,
) -> Result<Split> {
    let img = parse(images, 3, images_what)?;
    let lab = parse(labels, 1, labels_what)?;
    if img.dims[0] != lab.dims[0] {
        return Err(Error::Data(format!(
            "`{images_what}` holds {} images but `{labels_what}` {} labels",
            img.dims[0], lab.dims[0]
        )));
    }
    let labels = lab.data.iter().map(|&l| l as u32).collect();
    Split::from_raw(name, img.dims[2], img.dims[1], 1, img.data, labels)
}

fn read_split(dir: &Path, prefix: &str, name: &str) -> Result<Split> {
    let find = |kind: &str| {
        let base = format!("{prefix}-{kind}");
        find_file(dir, &base)
            .ok_or_else(|| Error::Data(format!("IDX data `{}` lacks `{base}` (or `{base}.gz`)", dir.display())))
    };
    let (ip, lp) = (find("images-idx3-ubyte")?, find("labels-idx1-ubyte")?);
    let (iw, lw) = (ip.display().to_string(), lp.display().to_string());
    split_from_bytes(name, &read_maybe_gz(&ip)?, &read_maybe_gz(&lp)?, &iw, &lw)
}

/// Class names for labels up to `max_label` (see the [module docs](self)).
pub fn class_names(fashion: bool, max_label: u32) -> Vec<String> {
    if fashion && max_label < 10 {
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max_label.max(9)).map(|k| k.to_string()).collect()
    }
}

/// Opens the IDX files in `dir`.
pub fn open(dir: &Path) -> Result<Dataset> {
    let train = read_split(dir, "train", "train")?;
    let val = read_split(dir, "t10k", "val")?;
    let max = train.labels().iter().chain(val.labels()).copied().max().unwrap_or(0);
    let full = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let fashion = full.to_string_lossy().to_lowercase().contains("fashion");
    Ok(Dataset {
        classes: class_names(fashion, max),
        train: Arc::new(train),
        val: Arc::new(val),
        format: DataFormat::Idx,
        source: dir.display().to_string(),
    })
}

/// Encodes an unsigned-byte IDX file (the inverse of [`parse`]).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_bad_sizes() {
        let f = encode(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse(&f, 3, "f").unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data.len(), 12);
        let e = parse(&f[..20], 3, "imgs").unwrap_err().to_string();
        assert!(e.contains("`imgs` is truncated") && e.contains("expected 28 bytes, found 20"), "{e}");
        let e = parse(&f, 1, "labels").unwrap_err().to_string();
        assert!(e.contains("magic 00 00 08 01") && e.contains("found 00 00 08 03"), "{e}");
        let e = parse(&f[..6], 3, "x").unwrap_err().to_string();
        assert!(e.contains("16-byte header, found 6"), "{e}");
    }

    #[test]
    fn split_checks_counts_and_gz_is_transparent() {
        use std::io::Write;
        let imgs = encode(&[2, 1, 2], &[1, 2, 3, 4]);
        let labs = encode(&[2], &[0, 9]);
        let s = split_from_bytes("t", &imgs, &labs, "i", "l").unwrap();
        assert_eq!((s.len(), s.label(1)), (2, 9));
        assert_eq!(s.decode(1, 1).unwrap().data, vec![3, 4]);
        let e = split_from_bytes("t", &imgs, &encode(&[3], &[0, 1, 2]), "i", "l").unwrap_err().to_string();
        assert!(e.contains("2 images") && e.contains("3 labels"), "{e}");
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&imgs).unwrap();
        let gz = z.finish().unwrap();
        assert_eq!(gunzip_if_needed(gz.clone(), "g").unwrap(), imgs);
        let e = gunzip_if_needed(gz[..gz.len() - 10].to_vec(), "g.gz").unwrap_err().to_string();
        assert!(e.contains("g.gz") && e.contains("truncated"), "{e}");
        assert_eq!(class_names(true, 9)[9], "Ankle boot");
        assert_eq!(class_names(false, 9)[3], "3");
        assert_eq!(class_names(true, 11).len(), 12);
    }
}
