//! The training engine: search and retrain loops, optimiser, checkpoints, reports and benches.
//!
//! * [`run_config`]: the resolved configuration of a run (named config + TOML + flags + `--set`).
//! * [`trainer`]: the loops ([`trainer::run`]).
//! * [`optim`]: SGD with PyTorch's semantics.
//! * [`checkpoint`]: one atomic safetensors file per checkpoint, state in its metadata.
//! * [`arch_report`]: the per-epoch architecture report and `arch.json`.
//! * [`metrics`], [`plots`]: `metrics.jsonl` and the SVG plots.
//! * [`bench`]: `edmips bench step`.
//! * [`memory`]: the allocator settings the command line applies (no page faults per step).

pub mod arch_report;
pub mod atomic;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod plots;
pub mod run_config;
pub mod run_folder;
pub mod step;
pub mod sweep;
pub mod trainer;

pub use arch_report::ArchReport;
pub use run_config::{DataConfig, RunConfig, TrainConfig};
pub use trainer::{run, RunKind, RunOptions, RunSummary, ValResult};
