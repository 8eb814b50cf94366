//! The CIFAR-10 binary format: `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//! `test_batch.bin` (val), each a sequence of 3,073-byte records: one label byte (0-9), then the
//! 32×32 image as 1,024 red, 1,024 green and 1,024 blue bytes (CHW, row-major). The official
//! files hold 10,000 records each; any whole number of records is accepted, and a file whose size
//! is not a multiple of 3,073 is rejected as truncated. The files may sit in `DATA` or in
//! `DATA/cifar-10-batches-bin/` (the official archive's folder). Class names come from
//! `batches.meta.txt` when it is there, else [`CIFAR10_CLASSES`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edmips_core::error::{Error, Result};

use super::{DataFormat, Dataset, Split};

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Bytes of one record: a label byte and a 3×32×32 image.
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// Records in each official batch file.
pub const OFFICIAL_RECORDS: usize = 10_000;

/// The train batch file names.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

/// The val (test) batch file name.
pub const VAL_FILE: &str = "test_batch.bin";

/// The directory holding `data_batch_1.bin`: `root` or `root/cifar-10-batches-bin`.
pub fn find_dir(root: &Path) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("cifar-10-batches-bin")].into_iter().find(|d| d.join(TRAIN_FILES[0]).is_file())
}

/// Parses CIFAR-10 binary `bytes` (from `file`, named in errors) into HWC pixels and labels.
pub fn parse(bytes: &[u8], file: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        let whole = bytes.len() / RECORD_BYTES;
        return Err(Error::Data(format!(
            "CIFAR-10 file `{}` is truncated or not CIFAR-10 binary: expected a whole number of {RECORD_BYTES}-byte \
             records ({} bytes for the official {OFFICIAL_RECORDS} records), found {} bytes ({whole} records and {} \
             bytes over)",
            file.display(),
            RECORD_BYTES * OFFICIAL_RECORDS,
            bytes.len(),
            bytes.len() - whole * RECORD_BYTES
        )));
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut pixels = vec![0u8; n * 3072];
    let mut labels = Vec::with_capacity(n);
    for (r, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] >= 10 {
            return Err(Error::Data(format!(
                "CIFAR-10 file `{}`: record {r} has label {}, expected 0..9",
                file.display(),
                rec[0]
            )));
        }
        labels.push(rec[0] as u32);
        let out = &mut pixels[r * 3072..(r + 1) * 3072];
        for p in 0..1024 {
            for c in 0..3 {
                out[p * 3 + c] = rec[1 + c * 1024 + p];
            }
        }
    }
    Ok((pixels, labels))
}

fn read_files(dir: &Path, names: &[&str]) -> Result<(Vec<u8>, Vec<u32>)> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for name in names {
        let f = dir.join(name);
        if !f.is_file() {
            return Err(Error::Data(format!(
                "CIFAR-10 binary data `{}` lacks `{name}` (expected {} and {VAL_FILE})",
                dir.display(),
                TRAIN_FILES.join(", ")
            )));
        }
        let bytes = std::fs::read(&f).map_err(|e| Error::io("reading CIFAR-10 batch", &f, e))?;
        let (p, l) = parse(&bytes, &f)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Ok((pixels, labels))
}

/// Opens CIFAR-10 binary batches in `root` (or `root/cifar-10-batches-bin`).
pub fn open(root: &Path) -> Result<Dataset> {
    let dir = find_dir(root).ok_or_else(|| {
        Error::Data(format!(
            "`{}` holds no CIFAR-10 binary batches (expected {} and {VAL_FILE}, there or in cifar-10-batches-bin/)",
            root.display(),
            TRAIN_FILES.join(", ")
        ))
    })?;
    let (tp, tl) = read_files(&dir, &TRAIN_FILES)?;
    let (vp, vl) = read_files(&dir, &[VAL_FILE])?;
    let meta = dir.join("batches.meta.txt");
    let mut classes: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    if let Ok(text) = std::fs::read_to_string(&meta) {
        let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if names.len() == 10 {
            classes = names;
        }
    }
    Ok(Dataset {
        classes,
        train: Arc::new(Split::from_raw("train", 32, 32, 3, tp, tl)?),
        val: Arc::new(Split::from_raw("val", 32, 32, 3, vp, vl)?),
        format: DataFormat::CifarBin,
        source: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_hwc_images() {
        let mut rec = vec![7u8];
        for c in 0..3u8 {
            rec.extend((0..1024).map(|p| (p as u8).wrapping_add(c * 50)));
        }
        let (px, l) = parse(&rec, Path::new("x.bin")).unwrap();
        assert_eq!(l, vec![7]);
        assert_eq!(&px[..6], &[0, 50, 100, 1, 51, 101]);
        let e = parse(&rec[..3000], Path::new("x.bin")).unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("found 3000 bytes") && e.contains("30730000"), "{e}");
        rec[0] = 10;
        assert!(parse(&rec, Path::new("x.bin")).unwrap_err().to_string().contains("label 10"));
    }
}
