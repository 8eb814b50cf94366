//! The default data set built into the binary: a balanced subset of Fashion-MNIST.
//!
//! Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, Zalando Research) is MIT-licensed; the notice is
//! `src/data/assets/FASHION-MNIST-LICENSE`. The subset is the first [`TRAIN_PER_CLASS`] images of
//! each class of the official training file and the first [`VAL_PER_CLASS`] of each class of
//! the official test file, in file order (so classes stay interleaved as in the originals):
//! 4,000 train and 500 val images, 28×28 grayscale. It is stored in
//! `src/data/assets/fashion-mnist-subset/` as the four gzip'd IDX files, so that directory is itself a
//! data set [`super::open`] reads.
//!
//! [`write_assets`] regenerates the files from the full data set (the ignored test
//! `regenerate_embedded_fashion_mnist_subset` in `tests/data_embedded.rs` runs it on
//! `../shared/data/fashion-mnist`); [`generate`] gives the un-gzipped IDX contents, which a test
//! compares with [`raw_files`].

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use edmips_core::error::{Error, Result};

use super::idx::{self, FASHION_MNIST_CLASSES};
use super::{DataFormat, Dataset};

/// Train images kept per class.
pub const TRAIN_PER_CLASS: usize = 400;
/// Val images kept per class.
pub const VAL_PER_CLASS: usize = 50;

/// The asset file names, in the order of [`SubsetFiles`]' fields.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

const TRAIN_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/data/assets/fashion-mnist-subset/train-images-idx3-ubyte.gz"
));
const TRAIN_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/data/assets/fashion-mnist-subset/train-labels-idx1-ubyte.gz"
));
const VAL_IMAGES_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/data/assets/fashion-mnist-subset/t10k-images-idx3-ubyte.gz"
));
const VAL_LABELS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/data/assets/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz"
));

/// The licence notice of Fashion-MNIST, as shipped beside the subset.
pub const LICENSE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/data/assets/FASHION-MNIST-LICENSE"));

/// The un-gzipped IDX contents of the subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetFiles {
    /// `train-images-idx3-ubyte`.
    pub train_images: Vec<u8>,
    /// `train-labels-idx1-ubyte`.
    pub train_labels: Vec<u8>,
    /// `t10k-images-idx3-ubyte`.
    pub val_images: Vec<u8>,
    /// `t10k-labels-idx1-ubyte`.
    pub val_labels: Vec<u8>,
}

impl SubsetFiles {
    fn as_array(&self) -> [&[u8]; 4] {
        [&self.train_images, &self.train_labels, &self.val_images, &self.val_labels]
    }
}

/// The embedded files, un-gzipped.
pub fn raw_files() -> Result<SubsetFiles> {
    let g = |b: &[u8], name: &str| idx::gunzip_if_needed(b.to_vec(), &format!("embedded {name}"));
    Ok(SubsetFiles {
        train_images: g(TRAIN_IMAGES_GZ, FILE_NAMES[0])?,
        train_labels: g(TRAIN_LABELS_GZ, FILE_NAMES[1])?,
        val_images: g(VAL_IMAGES_GZ, FILE_NAMES[2])?,
        val_labels: g(VAL_LABELS_GZ, FILE_NAMES[3])?,
    })
}

/// The embedded balanced Fashion-MNIST subset (4,000 train, 500 val, 10 classes, 28×28×1).
pub fn fashion_mnist_subset() -> Result<Dataset> {
    let f = raw_files()?;
    let train = idx::split_from_bytes("train", &f.train_images, &f.train_labels, FILE_NAMES[0], FILE_NAMES[1])?;
    let val = idx::split_from_bytes("val", &f.val_images, &f.val_labels, FILE_NAMES[2], FILE_NAMES[3])?;
    Ok(Dataset {
        classes: FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
        train: Arc::new(train),
        val: Arc::new(val),
        format: DataFormat::Idx,
        source: "embedded Fashion-MNIST subset (400 train + 50 val per class)".into(),
    })
}

/// The first `per_class` samples of each of the 10 classes, in file order, as IDX contents.
fn select(images: &[u8], labels: &[u8], per_class: usize, what: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let img = idx::parse(images, 3, &format!("{what} images"))?;
    let lab = idx::parse(labels, 1, &format!("{what} labels"))?;
    let per = img.dims[1] * img.dims[2];
    let mut counts = [0usize; 10];
    let (mut px, mut ls) = (Vec::new(), Vec::new());
    for (i, &l) in lab.data.iter().enumerate().take(img.dims[0]) {
        let c = counts.get_mut(l as usize).ok_or_else(|| Error::Data(format!("{what} label {l} is not 0..9")))?;
        if *c < per_class {
            *c += 1;
            px.extend_from_slice(&img.data[i * per..(i + 1) * per]);
            ls.push(l);
        }
    }
    if counts.iter().any(|&c| c < per_class) {
        return Err(Error::Data(format!("{what}: fewer than {per_class} samples in some class: {counts:?}")));
    }
    let n = ls.len();
    Ok((idx::encode(&[n, img.dims[1], img.dims[2]], &px), idx::encode(&[n], &ls)))
}

/// The subset's IDX contents, computed from the full Fashion-MNIST IDX files in `src` (plain or
/// gzip'd).
pub fn generate(src: &Path) -> Result<SubsetFiles> {
    let read = |name: &str| {
        let p = idx::find_file(src, name)
            .ok_or_else(|| Error::Data(format!("`{}` lacks `{name}` (or `{name}.gz`)", src.display())))?;
        idx::read_maybe_gz(&p)
    };
    let (train_images, train_labels) =
        select(&read("train-images-idx3-ubyte")?, &read("train-labels-idx1-ubyte")?, TRAIN_PER_CLASS, "train")?;
    let (val_images, val_labels) =
        select(&read("t10k-images-idx3-ubyte")?, &read("t10k-labels-idx1-ubyte")?, VAL_PER_CLASS, "t10k")?;
    Ok(SubsetFiles { train_images, train_labels, val_images, val_labels })
}

/// Regenerates the four gzip'd asset files in `dst` from the full data set in `src`.
pub fn write_assets(src: &Path, dst: &Path) -> Result<()> {
    let files = generate(src)?;
    std::fs::create_dir_all(dst).map_err(|e| Error::io("creating", dst, e))?;
    for (name, data) in FILE_NAMES.iter().zip(files.as_array()) {
        let path = dst.join(name);
        let mut z = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
        z.write_all(data).map_err(|e| Error::io("compressing", &path, e))?;
        let gz = z.finish().map_err(|e| Error::io("compressing", &path, e))?;
        std::fs::write(&path, gz).map_err(|e| Error::io("writing", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_the_first_of_each_class_in_order() {
        let labels: Vec<u8> = (0..40).map(|i| (i % 10) as u8).collect();
        let images: Vec<u8> = (0..40).flat_map(|i| [i as u8, 0]).collect();
        let (im, la) = select(&idx::encode(&[40, 1, 2], &images), &idx::encode(&[40], &labels), 2, "t").unwrap();
        let la = idx::parse(&la, 1, "l").unwrap();
        assert_eq!(la.data, labels[..20].to_vec());
        assert_eq!(idx::parse(&im, 3, "i").unwrap().data[..6], [0, 0, 1, 0, 2, 0]);
        assert!(select(&idx::encode(&[40, 1, 2], &images), &idx::encode(&[40], &labels), 5, "t").is_err());
    }

    #[test]
    fn licence_names_zalando_and_mit() {
        assert!(LICENSE.contains("Zalando") && LICENSE.contains("MIT"));
    }
}
