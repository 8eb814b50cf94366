//! The real data sets of `../shared/data` (see its README): CIFAR-10 as a JPEG ImageFolder and
//! Fashion-MNIST as gzip'd IDX files. These tests fail, saying where the data must be, when it is
//! missing. Run them in release (`cargo test --release --test data_real`): they decode 60,000
//! JPEGs.

use std::path::PathBuf;
use std::process::Command;

use edmips::data::{self, DataFormat, DataOptions, Loader, LoaderConfig};
use edmips_core::candle::Device;
use edmips_core::InputSpec;

fn shared_data() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(
        d.join("cifar10.tar.gz").is_file() && d.join("fashion-mnist").is_dir(),
        "the real-data tests need `{}` with cifar10.tar.gz and fashion-mnist/ (the project's shared/data, \
         beside the repository root)",
        d.display()
    );
    d
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unpack_cifar() -> (TempDir, PathBuf) {
    let tarball = shared_data().join("cifar10.tar.gz");
    let t = TempDir(std::env::temp_dir().join(format!("edmips-data-real-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&t.0);
    std::fs::create_dir_all(&t.0).unwrap();
    let st = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&t.0).status().expect("running tar");
    assert!(st.success(), "tar xzf {} failed", tarball.display());
    // The README describes a top-level `cifar/` folder; the archive may also hold train/ and val/
    // directly.
    let root = if t.0.join("cifar").is_dir() { t.0.join("cifar") } else { t.0.clone() };
    (t, root)
}

#[test]
fn cifar10_jpeg_image_folder_opens_decodes_and_loads() {
    let (_t, root) = unpack_cifar();
    let ds = data::open(&root, &DataOptions::default()).unwrap();
    assert_eq!(ds.format, DataFormat::ImageFolder);
    assert_eq!(ds.classes, ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]);
    assert_eq!((ds.train.len(), ds.val.len()), (50_000, 10_000));
    assert_eq!(ds.train.class_counts(10), vec![5000; 10]);
    assert_eq!(ds.val.class_counts(10), vec![1000; 10]);

    // Decode every image, in parallel, through the val pipeline (CIFAR style: used as it is).
    let input = InputSpec::cifar(32);
    for split in [ds.train.clone(), ds.val.clone()] {
        let cfg = LoaderConfig::new(input.clone(), 1000, false, 0).workers(2);
        let mut n = 0;
        for b in Loader::epoch(split.clone(), &cfg, 0, &Device::Cpu).unwrap() {
            let b = b.unwrap();
            assert_eq!(b.images.dims()[1..], [3, 32, 32]);
            n += b.indices.len();
        }
        assert_eq!(n, split.len());
    }

    // A train batch: shuffled, augmented, normalised; same with 1 and 3 workers.
    let cfg = LoaderConfig::new(input, 128, true, 42).max_batches(Some(3));
    let run = |w: usize| -> Vec<(Vec<usize>, Vec<f32>, Vec<u32>)> {
        Loader::epoch(ds.train.clone(), &cfg.clone().workers(w), 5, &Device::Cpu)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (b.indices, b.images.flatten_all().unwrap().to_vec1().unwrap(), b.labels.to_vec1().unwrap())
            })
            .collect()
    };
    let one = run(1);
    assert_eq!(one.len(), 3);
    assert_eq!(one[0].1.len(), 128 * 3 * 32 * 32);
    let labels: Vec<u32> = one[0].0.iter().map(|&i| ds.train.label(i)).collect();
    assert_eq!(one[0].2, labels);
    let mean = one[0].1.iter().sum::<f32>() / one[0].1.len() as f32;
    assert!(mean.abs() < 0.5, "normalised mean {mean}");
    assert!(one == run(3), "1 and 3 workers must give bitwise-identical batches");

    // The ImageNet-style path (RandomResizedCrop to 64 from the 32x32 images, val resize + crop).
    let cfg = LoaderConfig::new(InputSpec::imagenet(64, 73), 16, true, 1).max_batches(Some(1));
    let b = Loader::epoch(ds.train.clone(), &cfg, 0, &Device::Cpu).unwrap().next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[16, 3, 64, 64]);
    let cfg = LoaderConfig::new(InputSpec::imagenet(64, 73), 16, false, 1).max_batches(Some(1));
    let b = Loader::epoch(ds.val.clone(), &cfg, 0, &Device::Cpu).unwrap().next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[16, 3, 64, 64]);
}

#[test]
fn fashion_mnist_idx_loads_with_the_right_counts_and_labels() {
    let dir = shared_data().join("fashion-mnist");
    let ds = data::open(&dir, &DataOptions::default()).unwrap();
    assert_eq!(ds.format, DataFormat::Idx);
    assert_eq!((ds.train.len(), ds.val.len()), (60_000, 10_000));
    assert_eq!(ds.classes[0], "T-shirt/top");
    assert_eq!(ds.classes[9], "Ankle boot");
    assert_eq!(ds.train.class_counts(10), vec![6000; 10]);
    assert_eq!(ds.val.class_counts(10), vec![1000; 10]);
    // The first training labels of Fashion-MNIST: Ankle boot, T-shirt/top, T-shirt/top, Dress.
    assert_eq!(ds.train.labels()[..4], [9, 0, 0, 3]);
    let img = ds.train.decode(0, 1).unwrap();
    assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
    assert_eq!(ds.train.decode(0, 3).unwrap().channels, 3);
    // An explicit format works too.
    let ds = data::open(&dir, &DataOptions { format: Some(DataFormat::Idx), skip_bad: false }).unwrap();
    assert_eq!(ds.val.len(), 10_000);
}
