//! The embedded Fashion-MNIST subset: size, balance, its loader pipeline, and that it is what the
//! generator makes from `../shared/data/fashion-mnist`.

use std::path::PathBuf;

use edmips::data::{self, embedded, DataOptions, Loader, LoaderConfig};
use edmips_core::candle::Device;
use edmips_core::InputSpec;

fn fashion_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist");
    assert!(
        d.join("train-images-idx3-ubyte.gz").is_file(),
        "this test needs the full Fashion-MNIST IDX files in `{}` (the project's shared/data, beside the \
         repository root)",
        d.display()
    );
    d
}

fn gray28() -> InputSpec {
    InputSpec { channels: 1, size: 28, resize: None, mean: vec![0.2860], std: vec![0.3530], random_resized_crop: false }
}

#[test]
fn embedded_subset_is_balanced_and_the_right_size() {
    let ds = embedded::fashion_mnist_subset().unwrap();
    assert_eq!(ds.classes.len(), 10);
    assert_eq!(ds.classes[1], "Trouser");
    assert_eq!((ds.train.len(), ds.val.len()), (4000, 500));
    assert_eq!(ds.train.class_counts(10), vec![400; 10]);
    assert_eq!(ds.val.class_counts(10), vec![50; 10]);
    let img = ds.train.decode(0, 1).unwrap();
    assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
    // The asset directory is itself an IDX data set.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/assets/fashion-mnist-subset");
    let on_disk = data::open(&dir, &DataOptions::default()).unwrap();
    assert_eq!(on_disk.classes, ds.classes);
    assert_eq!(on_disk.train.labels(), ds.train.labels());
}

#[test]
fn embedded_subset_batches_are_worker_independent() {
    let ds = embedded::fashion_mnist_subset().unwrap();
    let cfg = LoaderConfig::new(gray28(), 100, true, 3).max_batches(Some(8));
    let run = |w: usize| -> Vec<(Vec<usize>, Vec<f32>, Vec<u32>)> {
        Loader::epoch(ds.train.clone(), &cfg.clone().workers(w), 2, &Device::Cpu)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.images.dims(), &[100, 1, 28, 28]);
                (b.indices, b.images.flatten_all().unwrap().to_vec1().unwrap(), b.labels.to_vec1().unwrap())
            })
            .collect()
    };
    let one = run(1);
    assert_eq!(one.len(), 8);
    assert!(one == run(3), "1 and 3 workers must give bitwise-identical batches");
    assert!(one == run(0));
    // A 3-channel network gets the gray images replicated into RGB.
    let rgb = LoaderConfig::new(InputSpec { channels: 3, size: 28, ..InputSpec::cifar(28) }, 10, false, 0);
    let b = Loader::epoch(ds.val.clone(), &rgb, 0, &Device::Cpu).unwrap().next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[10, 3, 28, 28]);
}

#[test]
fn embedded_subset_equals_what_the_generator_makes() {
    let generated = embedded::generate(&fashion_dir()).unwrap();
    let embedded = embedded::raw_files().unwrap();
    assert!(generated == embedded, "the embedded asset differs from the generator's output: regenerate it");
}

/// Rebuilds `src/data/assets/fashion-mnist-subset/` from `../shared/data/fashion-mnist`:
/// `cargo test --test data_embedded -- --ignored regenerate`.
#[test]
#[ignore]
fn regenerate_embedded_fashion_mnist_subset() {
    let dst = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/data/assets/fashion-mnist-subset");
    embedded::write_assets(&fashion_dir(), &dst).unwrap();
}
