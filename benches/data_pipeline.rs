//! Throughput of the train data pipeline on real data: `cargo bench --bench data_pipeline`.
//!
//! Uses `EDMIPS_BENCH_DATA` if set, else unpacks `../shared/data/cifar10.tar.gz`, and prints one
//! JSON report per (pipeline, workers): the CIFAR pipeline (32x32, pad + random crop) over a whole
//! epoch, and the ImageNet pipeline (RandomResizedCrop to 224) over 2,560 images.

use std::path::PathBuf;
use std::process::Command;

use edmips::core::InputSpec;
use edmips::data::{bench_data, DataBenchOptions};

fn main() {
    let mut tmp = None;
    let root = match std::env::var_os("EDMIPS_BENCH_DATA") {
        Some(p) => PathBuf::from(p),
        None => {
            let tarball = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10.tar.gz");
            assert!(tarball.is_file(), "set EDMIPS_BENCH_DATA or provide `{}`", tarball.display());
            let t = std::env::temp_dir().join(format!("edmips-data-bench-{}", std::process::id()));
            std::fs::create_dir_all(&t).unwrap();
            let st = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&t).status().unwrap();
            assert!(st.success());
            tmp = Some(t.clone());
            if t.join("cifar").is_dir() {
                t.join("cifar")
            } else {
                t
            }
        }
    };
    for (input, max_batches, batch) in
        [(InputSpec::cifar(32), None, 256), (InputSpec::imagenet(224, 256), Some(40), 64)]
    {
        for workers in [1, 2] {
            let mut o = DataBenchOptions::new(Some(root.clone()), input.clone());
            o.workers = workers;
            o.batch_size = batch;
            o.max_batches = max_batches;
            let r = bench_data(&o).unwrap();
            println!("{r}");
            println!("{}", serde_json::to_string(&r).unwrap());
        }
    }
    let mut o =
        DataBenchOptions::new(None, InputSpec { channels: 1, mean: vec![0.5], std: vec![0.5], ..InputSpec::cifar(28) });
    o.workers = 2;
    println!("{}", bench_data(&o).unwrap());
    if let Some(t) = tmp {
        let _ = std::fs::remove_dir_all(t);
    }
}
