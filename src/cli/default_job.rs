//! The default job: what `edmips search` and `edmips train` run without DATA, on the embedded
//! Fashion-MNIST subset. Every setting of the preset is here, applied before `--config`, the
//! flags and `--set`, so each can still be overridden.

use crate::engine::budget::BudgetTarget;
use crate::engine::{RunConfig, RunKind};

/// The configuration the default job searches.
pub const SEARCH_CONFIG: &str = "mixres20_w1234a234";

/// The configuration the default job retrains (with the search's `arch.json`).
pub const TRAIN_CONFIG: &str = "quantres20_cfg";

/// The configuration a run of `kind` uses when `-a` is not given.
pub fn config_for(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Search => SEARCH_CONFIG,
        RunKind::Train => TRAIN_CONFIG,
    }
}

/// Fits a configuration to the embedded Fashion-MNIST subset (1-channel 28x28 images):
/// ResNet-20 is built for that input; other backbones get the images resized by the loader.
pub fn fit_embedded_data(cfg: &mut RunConfig) {
    if cfg.model.backbone.id == edmips_zoo::resnet20::ID {
        cfg.model.backbone.params.insert("channels".into(), toml::Value::Integer(1));
        cfg.model.backbone.params.insert("size".into(), toml::Value::Integer(28));
    }
}

/// Applies the default job's preset: the embedded data's input and 10 classes, 2 epochs with
/// the rates stepped after each, batch 128; a search also gets `lra 0.1` and a budget: a
/// normalised bit of 2.0, with `cd` controlled from 0.003.
pub fn apply(cfg: &mut RunConfig, kind: RunKind) {
    fit_embedded_data(cfg);
    cfg.model.num_classes = 10;
    let t = &mut cfg.train;
    t.epochs = 2;
    t.step_epoch = 1;
    t.batch_size = 128;
    t.workers = 2;
    t.print_freq = 8;
    if kind == RunKind::Search {
        // ResNet-20's complexity at uniform logits is ~128; 0.003 makes cd·C ≈ 0.37, the
        // paper's ResNet-18 setting (0.00335 × 110). The logits get a 10× rate because the
        // default job is 2 epochs, not 25.
        t.complexity_decay = 0.003;
        t.lra = 0.1;
        t.target = Some(BudgetTarget::new("bit", 2.0));
    }
}
