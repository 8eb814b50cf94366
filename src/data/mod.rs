//! Data sets, the reference's transforms, and a parallel, deterministic batch loader.
//!
//! # Opening a data set
//!
//! [`open`] reads a `DATA` directory in one of three formats ([`DataFormat`]), detected from what
//! it contains unless [`DataOptions::format`] names one:
//!
//! | format | layout | detected by |
//! |---|---|---|
//! | [`DataFormat::ImageFolder`] | `DATA/train/<class>/**/*.jpg`, `DATA/val/<class>/**` (torchvision `ImageFolder`) | a `train/` directory |
//! | [`DataFormat::CifarBin`] | `data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin` (in `DATA` or `DATA/cifar-10-batches-bin/`) | `data_batch_1.bin` |
//! | [`DataFormat::Idx`] | `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…` (MNIST, Fashion-MNIST) | `train-images-idx3-ubyte[.gz]` |
//!
//! Everything that can be checked without decoding every image is checked at open time, with an
//! error naming the path at fault: a missing `DATA`, `train/` or `val/`, a class folder without
//! images, train and val class sets that differ, CIFAR or IDX files of the wrong size. Class
//! names: the sorted folder names (ImageFolder); CIFAR-10's ten names (or `batches.meta.txt` when
//! present); for IDX the Fashion-MNIST names when the path contains `fashion`
//! (case-insensitive), else the digits `"0"`..`"9"` (MNIST), since the files of the two data sets
//! are indistinguishable by size.
//!
//! [`embedded::fashion_mnist_subset`] is a balanced 4,000 + 500 image subset of Fashion-MNIST
//! built into the binary, the default data set of the small jobs.
//!
//! # Loading batches
//!
//! A [`Split`] holds the samples (file paths or raw pixels) and labels, and decodes one sample by
//! index. [`Loader::epoch`] turns a split into an iterator of [`Batch`]es (`images`
//! `[B, C, H, W]` f32, normalised; `labels` `[B]` u32; the sample `indices`), decoded and
//! augmented by `workers` threads ahead of the consumer through a bounded queue. The sample order
//! (shuffled for train) and every random draw are functions of `(seed, epoch, sample index)`
//! only, so batches are bitwise identical whatever the number of workers. `start_batch` resumes
//! mid-epoch exactly; `max_batches` caps an epoch.
//!
//! The transforms ([`transforms`]) follow torchvision: train `RandomResizedCrop` + flip
//! (ImageNet style) or `RandomCrop(size, padding = size/8)` + flip (CIFAR style), val
//! `Resize` + `CenterCrop`, then `ToTensor` + `Normalize`; [`edmips_core::InputSpec`] chooses.
//!
//! A corrupt image stops the epoch with an error naming the file, unless
//! [`DataOptions::skip_bad`] is set: then it is left out of its batch and counted
//! ([`Batch::skipped`], [`Split::bad_samples`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use edmips::data::{self, DataOptions, Loader, LoaderConfig};
//! use edmips_core::{candle::Device, InputSpec};
//!
//! let ds = data::open("DATA".as_ref(), &DataOptions::default())?;
//! let cfg = LoaderConfig::new(InputSpec::cifar(32), 128, true, 42).workers(2);
//! for batch in Loader::epoch(ds.train.clone(), &cfg, 0, &Device::Cpu)? {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims()[1..], [3, 32, 32]);
//! }
//! # Ok::<(), edmips_core::Error>(())
//! ```

pub mod bench;
pub mod cifar_bin;
pub mod embedded;
pub mod idx;
pub mod image;
pub mod image_folder;
pub mod loader;
mod split;
pub mod transforms;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use edmips_core::error::{Error, Result};

pub use self::bench::{bench_data, DataBenchOptions, DataBenchReport};
pub use self::image::Image;
pub use self::loader::{Batch, EpochIter, Loader, LoaderConfig};
pub use self::split::Split;

/// The on-disk formats [`open`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// torchvision `ImageFolder`: `train/<class>/*`, `val/<class>/*` image files.
    ImageFolder,
    /// CIFAR-10 binary batches (`data_batch_{1..5}.bin`, `test_batch.bin`).
    CifarBin,
    /// IDX files (MNIST, Fashion-MNIST), optionally gzip'd.
    Idx,
}

impl DataFormat {
    /// Every format with its command-line name.
    pub const ALL: [(DataFormat, &'static str); 3] =
        [(DataFormat::ImageFolder, "image-folder"), (DataFormat::CifarBin, "cifar-bin"), (DataFormat::Idx, "idx")];

    /// The command-line name (`image-folder`, `cifar-bin`, `idx`).
    pub fn name(self) -> &'static str {
        DataFormat::ALL.iter().find(|(f, _)| *f == self).map(|(_, n)| *n).unwrap_or("?")
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DataFormat::ALL.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)).map(|(f, _)| *f).ok_or_else(|| {
            Error::Data(format!("unknown data format `{s}`; known formats: image-folder, cifar-bin, idx"))
        })
    }
}

/// How [`open`] reads a data set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOptions {
    /// The format, or `None` to detect it from the directory's contents.
    pub format: Option<DataFormat>,
    /// Skip (and count) samples that fail to decode instead of stopping with an error.
    pub skip_bad: bool,
}

/// A data set: its class names and its train and val splits.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names; label `k` is `classes[k]`.
    pub classes: Vec<String>,
    /// The training split.
    pub train: Arc<Split>,
    /// The validation split.
    pub val: Arc<Split>,
    /// The format it was read from.
    pub format: DataFormat,
    /// Where it came from (a path, or a description of an embedded set), for reports.
    pub source: String,
}

impl Dataset {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// Opens the data set at `path` (see the [module docs](self)), validating its layout.
pub fn open(path: &Path, opts: &DataOptions) -> Result<Dataset> {
    if !path.exists() {
        return Err(Error::Data(format!(
            "data path `{}` does not exist (expected a directory with train/ and val/ image folders, \
             CIFAR-10 .bin batches or MNIST-style IDX files)",
            path.display()
        )));
    }
    if !path.is_dir() {
        return Err(Error::Data(format!("data path `{}` is not a directory", path.display())));
    }
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    let mut ds = match format {
        DataFormat::ImageFolder => image_folder::open(path)?,
        DataFormat::CifarBin => cifar_bin::open(path)?,
        DataFormat::Idx => idx::open(path)?,
    };
    if opts.skip_bad {
        for s in [&mut ds.train, &mut ds.val] {
            if let Some(s) = Arc::get_mut(s) {
                s.set_skip_bad(true);
            }
        }
    }
    Ok(ds)
}

/// Which format the directory `path` holds.
pub fn detect_format(path: &Path) -> Result<DataFormat> {
    if path.join("train").is_dir() {
        return Ok(DataFormat::ImageFolder);
    }
    if cifar_bin::find_dir(path).is_some() {
        return Ok(DataFormat::CifarBin);
    }
    if idx::find_file(path, "train-images-idx3-ubyte").is_some() {
        return Ok(DataFormat::Idx);
    }
    let mut found: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::io("listing data directory", path, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let shown = if found.is_empty() {
        "it is empty".to_string()
    } else if found.len() > 10 {
        format!("it holds {}, ... ({} entries)", found[..10].join(", "), found.len())
    } else {
        format!("it holds {}", found.join(", "))
    };
    Err(Error::Data(format!(
        "cannot tell the format of data directory `{}`: expected a train/ folder (image-folder), \
         data_batch_1.bin (cifar-bin) or train-images-idx3-ubyte[.gz] (idx); {shown}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for (f, n) in DataFormat::ALL {
            assert_eq!(n.parse::<DataFormat>().unwrap(), f);
            assert_eq!(f.to_string(), n);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{n}\""));
        }
        let e = "jpeg".parse::<DataFormat>().unwrap_err().to_string();
        assert!(e.contains("`jpeg`") && e.contains("image-folder"), "{e}");
    }
}
