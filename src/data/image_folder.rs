//! torchvision's `ImageFolder` layout: `DATA/train/<class>/…`, `DATA/val/<class>/…`.
//!
//! As in torchvision, classes are the sub-directories of a split sorted by name (byte order, which
//! for UTF-8 is Python's code-point order), class `k` being the `k`-th; the samples of a class are
//! all files below its directory (recursively) whose extension is one of [`IMAGE_EXTENSIONS`], in
//! the order of Python's `sorted(os.walk(...))` then `sorted(files)`; other files are ignored.
//! Nothing is decoded here.
//!
//! **Symbolic links.** Links to files are followed. A link to a directory is followed only as a
//! class folder itself (`train/<class>` may point elsewhere, e.g. onto another disk), and only
//! when its target is outside the split directory and not one of its ancestors, and no two
//! class folders resolve to the same directory. Inside a class folder, a link to a directory is
//! an error naming it: it could loop (counting images without end) or pull another class's
//! images in under this class's label. `DATA`, `train/` and `val/` themselves may be links.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edmips_core::error::{Error, Result};

use super::image::{has_image_extension, IMAGE_EXTENSIONS};
use super::{DataFormat, Dataset, Split};

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).map(|m| m.file_type().is_symlink()).unwrap_or(false)
}

fn canonical(p: &Path) -> Result<PathBuf> {
    p.canonicalize().map_err(|e| Error::io("resolving", p, e))
}

/// The sorted class directory names of the split directory `dir`, applying the link rule of
/// the [module docs](self) to class folders that are links.
pub fn find_classes(dir: &Path) -> Result<Vec<String>> {
    let split = canonical(dir)?;
    let mut classes = Vec::new();
    let mut targets: Vec<(PathBuf, String)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("listing split directory", dir, e))? {
        let e = e.map_err(|e| Error::io("listing split directory", dir, e))?;
        // `Path::is_dir` follows symbolic links, as `os.scandir(...).is_dir()` does.
        let path = e.path();
        if path.is_dir() {
            let name = e.file_name().into_string().map_err(|n| {
                Error::Data(format!("class directory name {n:?} in `{}` is not valid UTF-8", dir.display()))
            })?;
            let target = canonical(&path)?;
            if is_link(&path) && (split.starts_with(&target) || target.starts_with(&split)) {
                return Err(Error::Data(format!(
                    "class folder `{}` is a link to `{}`, {}; a class folder may link only to a directory outside the split",
                    path.display(),
                    target.display(),
                    if split.starts_with(&target) { "which contains the split itself (a loop)" } else { "inside the same split" }
                )));
            }
            if let Some((_, other)) = targets.iter().find(|(t, _)| *t == target) {
                return Err(Error::Data(format!(
                    "class folders `{other}` and `{name}` of `{}` are the same directory (`{}`): its images would be counted under two labels",
                    dir.display(),
                    target.display()
                )));
            }
            targets.push((target, name.clone()));
            classes.push(name);
        }
    }
    classes.sort();
    Ok(classes)
}

/// The image files below `dir` in torchvision's order (see the [module docs](self)).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    // (directory as a string, file name) pairs, then sorted like `sorted(os.walk)`/`sorted(files)`.
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        dirs.push((d.to_string_lossy().into_owned(), d.clone()));
        for e in std::fs::read_dir(&d).map_err(|e| Error::io("listing class directory", &d, e))? {
            let p = e.map_err(|e| Error::io("listing class directory", &d, e))?.path();
            if p.is_dir() {
                if is_link(&p) {
                    let target = std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default();
                    return Err(Error::Data(format!(
                        "`{}` is a symbolic link to a directory (`{target}`) inside a class folder; such links are \
                         not followed (they can loop, or pull other classes' images in under this label): \
                         replace it with the directory itself or link the files",
                        p.display()
                    )));
                }
                stack.push(p);
            }
        }
    }
    dirs.sort();
    let mut out = Vec::new();
    for (_, d) in dirs {
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&d).map_err(|e| Error::io("listing class directory", &d, e))? {
            let p = e.map_err(|e| Error::io("listing class directory", &d, e))?.path();
            if !p.is_dir() && has_image_extension(&p) {
                files.push((p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p));
            }
        }
        files.sort();
        out.extend(files.into_iter().map(|(_, p)| p));
    }
    Ok(out)
}

/// Lists one split: its classes and `(path, label)` samples. Errors for a missing directory or
/// classes without images.
pub fn scan_split(root: &Path, split: &str) -> Result<(Vec<String>, Vec<PathBuf>, Vec<u32>)> {
    let dir = root.join(split);
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "image-folder data `{}` has no {split}/ directory (expected {split}/<class>/<image files>)",
            root.display()
        )));
    }
    let classes = find_classes(&dir)?;
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "`{}` has no class directories (expected {split}/<class>/<image files>)",
            dir.display()
        )));
    }
    let (mut paths, mut labels, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in classes.iter().enumerate() {
        let files = list_images(&dir.join(c))?;
        if files.is_empty() {
            empty.push(c.clone());
        }
        labels.extend(std::iter::repeat_n(k as u32, files.len()));
        paths.extend(files);
    }
    if !empty.is_empty() {
        return Err(Error::Data(format!(
            "`{}`: no image files in class folder(s) {}; supported extensions: {}",
            dir.display(),
            empty.join(", "),
            IMAGE_EXTENSIONS.map(|e| format!(".{e}")).join(" ")
        )));
    }
    Ok((classes, paths, labels))
}

/// Opens an `ImageFolder` data set rooted at `root` (with `train/` and `val/`), checking that both
/// splits exist, every class has images, and the two class sets are equal.
pub fn open(root: &Path) -> Result<Dataset> {
    let (classes, tp, tl) = scan_split(root, "train")?;
    let (vclasses, vp, vl) = scan_split(root, "val")?;
    if classes != vclasses {
        let only_train: Vec<&str> = classes.iter().filter(|c| !vclasses.contains(c)).map(|s| s.as_str()).collect();
        let only_val: Vec<&str> = vclasses.iter().filter(|c| !classes.contains(c)).map(|s| s.as_str()).collect();
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        return Err(Error::Data(format!(
            "`{}`: train/ and val/ have different classes ({} and {}); only in train/: {}; only in val/: {}",
            root.display(),
            classes.len(),
            vclasses.len(),
            list(&only_train),
            list(&only_val)
        )));
    }
    Ok(Dataset {
        classes,
        train: Arc::new(Split::from_files("train", tp, tl)?),
        val: Arc::new(Split::from_files("val", vp, vl)?),
        format: DataFormat::ImageFolder,
        source: root.display().to_string(),
    })
}
