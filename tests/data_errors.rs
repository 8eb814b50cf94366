//! Bad data sets give clear errors at open time (or, for undecodable images, when loaded).

mod common;

use std::path::Path;

use edmips::data::{self, DataFormat, DataOptions, Loader, LoaderConfig};
use edmips_core::candle::Device;
use edmips_core::InputSpec;

use common::TempDir;

/// A 2x2 binary PPM image of one colour.
fn ppm(v: u8) -> Vec<u8> {
    let mut b = b"P6\n2 2\n255\n".to_vec();
    b.extend(std::iter::repeat_n(v, 12));
    b
}

/// `root/<split>/<class>/<file>` for each entry.
fn write_folder(root: &Path, files: &[(&str, &str, &str, Vec<u8>)]) {
    for (split, class, name, bytes) in files {
        let d = root.join(split).join(class);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    }
}

fn open_err(root: &Path) -> String {
    data::open(root, &DataOptions::default()).unwrap_err().to_string()
}

fn spec2() -> InputSpec {
    InputSpec { resize: None, ..InputSpec::cifar(2) }
}

#[test]
fn a_corrupt_image_stops_the_epoch_naming_the_file() {
    let t = TempDir::new("data-errors-corrupt");
    write_folder(
        &t.0,
        &[
            ("train", "a", "0.ppm", ppm(10)),
            ("train", "a", "1.jpg", b"\xFF\xD8\xFF garbage, not a JPEG".to_vec()),
            ("train", "b", "2.ppm", ppm(20)),
            ("val", "a", "0.ppm", ppm(30)),
            ("val", "b", "0.ppm", ppm(40)),
        ],
    );
    // Opening lists files without decoding: no error yet.
    let ds = data::open(&t.0, &DataOptions::default()).unwrap();
    assert_eq!(ds.format, DataFormat::ImageFolder);
    assert_eq!(ds.classes, vec!["a", "b"]);
    assert_eq!(ds.train.len(), 3);
    let cfg = LoaderConfig::new(spec2(), 2, false, 0).workers(2);
    let results: Vec<_> = Loader::epoch(ds.train.clone(), &cfg, 0, &Device::Cpu).unwrap().collect();
    assert_eq!(results.len(), 1, "the iterator ends after the error");
    let e = results[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("1.jpg") && e.contains("cannot decode"), "{e}");

    // With skip_bad the file is left out and counted.
    let ds = data::open(&t.0, &DataOptions { format: None, skip_bad: true }).unwrap();
    let batches: Vec<_> =
        Loader::epoch(ds.train.clone(), &cfg, 0, &Device::Cpu).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.indices.clone()).collect::<Vec<_>>(), vec![vec![0], vec![2]]);
    assert_eq!(batches.iter().map(|b| b.skipped).sum::<usize>(), 1);
    assert_eq!(batches[0].images.dims(), &[1, 3, 2, 2]);
    assert_eq!(ds.train.bad_count(), 1);
    assert!(ds.train.bad_samples()[0].ends_with("1.jpg"));
}

#[test]
fn a_missing_path_or_split_is_reported() {
    let e = open_err(Path::new("/nonexistent/edmips-data"));
    assert!(e.contains("`/nonexistent/edmips-data` does not exist"), "{e}");

    let t = TempDir::new("data-errors-nosplit");
    write_folder(&t.0, &[("train", "a", "0.ppm", ppm(1))]);
    let e = open_err(&t.0);
    assert!(e.contains("no val/ directory"), "{e}");

    let t = TempDir::new("data-errors-notrain");
    write_folder(&t.0, &[("val", "a", "0.ppm", ppm(1))]);
    let e = data::open(&t.0, &DataOptions { format: Some(DataFormat::ImageFolder), skip_bad: false })
        .unwrap_err()
        .to_string();
    assert!(e.contains("no train/ directory"), "{e}");
    // Without an explicit format, a directory of unknown contents says what it looked for.
    let e = open_err(&t.0);
    assert!(e.contains("cannot tell the format") && e.contains("it holds val"), "{e}");
}

#[test]
fn an_empty_class_folder_is_reported() {
    let t = TempDir::new("data-errors-empty");
    write_folder(
        &t.0,
        &[
            ("train", "a", "0.ppm", ppm(1)),
            ("train", "b", "notes.txt", b"not an image".to_vec()),
            ("val", "a", "0.ppm", ppm(1)),
            ("val", "b", "0.PPM", ppm(1)),
        ],
    );
    let e = open_err(&t.0);
    assert!(e.contains("no image files in class folder(s) b") && e.contains(".jpeg"), "{e}");
}

#[test]
fn different_class_sets_are_reported() {
    let t = TempDir::new("data-errors-classes");
    write_folder(
        &t.0,
        &[
            ("train", "cat", "0.ppm", ppm(1)),
            ("train", "dog", "0.ppm", ppm(1)),
            ("val", "cat", "0.ppm", ppm(1)),
            ("val", "emu", "0.ppm", ppm(1)),
        ],
    );
    let e = open_err(&t.0);
    assert!(
        e.contains("different classes") && e.contains("only in train/: dog") && e.contains("only in val/: emu"),
        "{e}"
    );
}

#[test]
fn truncated_cifar_files_give_expected_and_found_sizes() {
    let t = TempDir::new("data-errors-cifar");
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(label * 20, 3072));
        r
    };
    for (k, name) in
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            .iter()
            .enumerate()
    {
        std::fs::write(t.0.join(name), [record(k as u8), record(9)].concat()).unwrap();
    }
    std::fs::write(t.0.join("test_batch.bin"), record(3)).unwrap();
    let ds = data::open(&t.0, &DataOptions::default()).unwrap();
    assert_eq!((ds.format, ds.train.len(), ds.val.len()), (DataFormat::CifarBin, 10, 1));
    assert_eq!(ds.classes[0], "airplane");
    assert_eq!(ds.train.labels()[..4], [0, 9, 1, 9]);
    assert_eq!(ds.train.decode(2, 3).unwrap().data[..3], [20, 20, 20]);

    let mut bytes = [record(0), record(1)].concat();
    bytes.truncate(3073 + 1000);
    std::fs::write(t.0.join("data_batch_4.bin"), bytes).unwrap();
    let e = open_err(&t.0);
    assert!(
        e.contains("data_batch_4.bin")
            && e.contains("truncated")
            && e.contains("found 4073 bytes")
            && e.contains("3073-byte"),
        "{e}"
    );
    std::fs::remove_file(t.0.join("test_batch.bin")).unwrap();
    std::fs::write(t.0.join("data_batch_4.bin"), record(0)).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("lacks `test_batch.bin`"), "{e}");
}

#[test]
fn truncated_idx_files_give_expected_and_found_sizes() {
    let t = TempDir::new("data-errors-idx");
    let header = |magic: u8, dims: &[u32]| {
        let mut h = vec![0, 0, 8, magic];
        for d in dims {
            h.extend(d.to_be_bytes());
        }
        h
    };
    let images = |n: u32| [header(3, &[n, 28, 28]), vec![7; n as usize * 784]].concat();
    let labels = |n: u32| [header(1, &[n]), (0..n).map(|i| (i % 10) as u8).collect()].concat();
    std::fs::write(t.0.join("train-images-idx3-ubyte"), images(20)).unwrap();
    std::fs::write(t.0.join("train-labels-idx1-ubyte"), labels(20)).unwrap();
    std::fs::write(t.0.join("t10k-images-idx3-ubyte"), images(10)).unwrap();
    std::fs::write(t.0.join("t10k-labels-idx1-ubyte"), labels(10)).unwrap();
    let ds = data::open(&t.0, &DataOptions::default()).unwrap();
    assert_eq!((ds.format, ds.train.len(), ds.val.len()), (DataFormat::Idx, 20, 10));
    assert_eq!(ds.classes, (0..10).map(|i| i.to_string()).collect::<Vec<_>>(), "no `fashion` in the path: digits");

    let mut short = images(20);
    short.truncate(16 + 784 * 3 + 5);
    std::fs::write(t.0.join("train-images-idx3-ubyte"), short).unwrap();
    let e = open_err(&t.0);
    assert!(
        e.contains("train-images-idx3-ubyte` is truncated") && e.contains("expected 15696 bytes, found 2373"),
        "{e}"
    );
    std::fs::write(t.0.join("train-images-idx3-ubyte"), images(20)).unwrap();
    std::fs::write(t.0.join("t10k-labels-idx1-ubyte"), labels(9)).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("10 images") && e.contains("9 labels"), "{e}");
    std::fs::remove_file(t.0.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("lacks `t10k-labels-idx1-ubyte`"), "{e}");
}

/// Directory links inside a class folder are refused (a loop would count images without end);
/// a class folder may link only outside its split, and two classes may not be one directory.
#[test]
fn directory_links_that_loop_or_cross_classes_are_refused_and_file_links_followed() {
    use std::os::unix::fs::symlink;
    let files = [
        ("train", "a", "0.ppm", ppm(10)),
        ("train", "b", "1.ppm", ppm(20)),
        ("val", "a", "0.ppm", ppm(30)),
        ("val", "b", "1.ppm", ppm(40)),
    ];
    // A link to its own class folder inside it: a loop.
    let t = TempDir::new("data-errors-link-loop");
    write_folder(&t.0, &files);
    symlink(t.0.join("train/a"), t.0.join("train/a/again")).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("train/a/again") && e.contains("symbolic link to a directory"), "{e}");

    // A link inside a class folder to another class: images under the wrong label.
    let t = TempDir::new("data-errors-link-cross");
    write_folder(&t.0, &files);
    symlink(t.0.join("train/b"), t.0.join("train/a/b_images")).unwrap();
    assert!(open_err(&t.0).contains("train/a/b_images"));

    // A class folder that links to the split's parent: a loop through the data root.
    let t = TempDir::new("data-errors-link-parent");
    write_folder(&t.0, &files);
    symlink(&t.0, t.0.join("train/c")).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("train/c") && e.contains("loop"), "{e}");

    // Two class folders that are the same directory.
    let t = TempDir::new("data-errors-link-twice");
    let outside = TempDir::new("data-errors-link-twice-target");
    write_folder(&t.0, &files);
    write_folder(&outside.0, &[("x", "c", "5.ppm", ppm(50))]);
    symlink(outside.0.join("x/c"), t.0.join("train/c")).unwrap();
    symlink(outside.0.join("x/c"), t.0.join("train/d")).unwrap();
    let e = open_err(&t.0);
    assert!(e.contains("`c`") && e.contains("`d`") && e.contains("same directory"), "{e}");

    // Allowed: a class folder linking outside the split, and links to files.
    let t = TempDir::new("data-errors-link-ok");
    write_folder(&t.0, &files);
    let outside = TempDir::new("data-errors-link-ok-target");
    write_folder(&outside.0, &[("x", "b", "7.ppm", ppm(70)), ("x", "b", "8.ppm", ppm(80))]);
    std::fs::remove_dir_all(t.0.join("train/b")).unwrap();
    symlink(outside.0.join("x/b"), t.0.join("train/b")).unwrap();
    symlink(t.0.join("val/a/0.ppm"), t.0.join("val/a/linked.ppm")).unwrap();
    let ds = data::open(&t.0, &DataOptions::default()).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (3, 3));
}
