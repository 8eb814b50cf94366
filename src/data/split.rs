//! [`Split`]: the samples of one split (train or val), decodable by index.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use edmips_core::error::{Error, Result};

use super::image::{decode_file, Image};

/// Where a split's pixels live.
#[derive(Debug)]
enum Samples {
    /// One encoded image file per sample.
    Files(Vec<PathBuf>),
    /// Raw 8-bit HWC pixels of equally sized images, back to back.
    Raw { width: usize, height: usize, channels: usize, pixels: Vec<u8> },
}

/// The samples and labels of one split. Build it with [`Split::from_files`] or
/// [`Split::from_raw`] (or get it from [`super::open`]); decode sample `i` with
/// [`Split::decode`].
#[derive(Debug)]
pub struct Split {
    name: String,
    samples: Samples,
    labels: Vec<u32>,
    skip_bad: bool,
    bad: Mutex<BTreeSet<usize>>,
}

impl Split {
    /// A split of image files, `labels[i]` the class of `paths[i]`.
    pub fn from_files(name: impl Into<String>, paths: Vec<PathBuf>, labels: Vec<u32>) -> Result<Self> {
        let name = name.into();
        if paths.len() != labels.len() {
            return Err(Error::Data(format!("split `{name}`: {} files but {} labels", paths.len(), labels.len())));
        }
        Ok(Split { name, samples: Samples::Files(paths), labels, skip_bad: false, bad: Mutex::default() })
    }

    /// A split of raw 8-bit images, each `height × width × channels` bytes (HWC), back to back in
    /// `pixels`, one label each.
    pub fn from_raw(
        name: impl Into<String>,
        width: usize,
        height: usize,
        channels: usize,
        pixels: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Self> {
        let name = name.into();
        if channels != 1 && channels != 3 {
            return Err(Error::Data(format!("split `{name}`: channels must be 1 or 3, found {channels}")));
        }
        let per = width * height * channels;
        if per == 0 || pixels.len() != per * labels.len() {
            return Err(Error::Data(format!(
                "split `{name}`: {} labels of {width}x{height}x{channels} images need {} pixel bytes, found {}",
                labels.len(),
                per * labels.len(),
                pixels.len()
            )));
        }
        Ok(Split {
            name,
            samples: Samples::Raw { width, height, channels, pixels },
            labels,
            skip_bad: false,
            bad: Mutex::default(),
        })
    }

    /// The split's name (`train`, `val`, or a description), used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The label of sample `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// The image files, for a split of files.
    pub fn paths(&self) -> Option<&[PathBuf]> {
        match &self.samples {
            Samples::Files(p) => Some(p),
            Samples::Raw { .. } => None,
        }
    }

    /// Sample `i` for messages: its file, or `<split> sample i`.
    pub fn describe(&self, i: usize) -> String {
        match &self.samples {
            Samples::Files(p) => p[i].display().to_string(),
            Samples::Raw { .. } => format!("{} sample {i}", self.name),
        }
    }

    /// Whether undecodable samples are skipped (and counted) rather than fatal.
    pub fn skip_bad(&self) -> bool {
        self.skip_bad
    }

    /// Sets [`Split::skip_bad`].
    pub fn set_skip_bad(&mut self, skip: bool) {
        self.skip_bad = skip;
    }

    /// Decodes sample `i` (an error naming the file if it cannot be read or decoded), converted
    /// to `channels` channels (1 or 3).
    pub fn decode(&self, i: usize, channels: usize) -> Result<Image> {
        if i >= self.len() {
            return Err(Error::Data(format!("split `{}` has {} samples, asked for {i}", self.name, self.len())));
        }
        match &self.samples {
            Samples::Files(p) => decode_file(&p[i], channels),
            Samples::Raw { width, height, channels: c, pixels } => {
                let per = width * height * c;
                let img = Image {
                    width: *width,
                    height: *height,
                    channels: *c,
                    data: pixels[i * per..(i + 1) * per].to_vec(),
                };
                img.to_channels(channels)
            }
        }
    }

    /// Records that sample `i` was skipped as undecodable.
    pub(crate) fn mark_bad(&self, i: usize) {
        if let Ok(mut b) = self.bad.lock() {
            b.insert(i);
        }
    }

    /// The samples skipped so far as undecodable (files or sample descriptions), each once.
    pub fn bad_samples(&self) -> Vec<String> {
        let b = self.bad.lock().map(|b| b.clone()).unwrap_or_default();
        b.into_iter().map(|i| self.describe(i)).collect()
    }

    /// How many distinct samples were skipped so far as undecodable.
    pub fn bad_count(&self) -> usize {
        self.bad.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Number of samples per class (`num_classes` entries; labels beyond it are not counted).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut c = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(x) = c.get_mut(l as usize) {
                *x += 1;
            }
        }
        c
    }
}
