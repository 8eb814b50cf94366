//! One training step (forward, backward, SGD update) of the ResNet-20 and tiny configurations
//! on CPU: search (mixed convs, both optimisers, complexity term) and retrain (fixed w2a2).
//!
//! `cargo bench --bench step`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edmips::core::candle::Device;
use edmips::engine::bench::StepRunner;
use edmips::engine::RunConfig;

fn steps(c: &mut Criterion) {
    edmips::link_builtins();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (arch, batch) in
        [("mixtiny_w1234a234", 32), ("quanttiny_cfg", 32), ("mixres20_w1234a234", 32), ("quantres20_2w2a", 32)]
    {
        let cfg = RunConfig::named(arch).expect("registered configuration");
        let mut runner = StepRunner::new(&cfg, batch, &Device::Cpu).expect("network");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("{arch}/b{batch}"), |b| b.iter(|| runner.step().expect("step")));
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
