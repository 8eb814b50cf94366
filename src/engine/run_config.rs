//! [`RunConfig`]: everything a search or retrain run depends on, resolved from a named
//! configuration, an optional TOML file, command-line flags and `--set key=value` overrides (in
//! that order of precedence, last wins). The resolved config is saved with the run, and a
//! resume against a different one is refused with the fields that differ.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::budget::BudgetTarget;
use super::step::SgdParams;
use crate::data::DataFormat;
use edmips_core::error::{Error, Result};
use edmips_core::model_config::ModelConfig;

/// Training hyper-parameters (the reference's flags and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Total epochs.
    pub epochs: usize,
    /// Both learning rates are multiplied by 0.1 every `step_epoch` epochs.
    pub step_epoch: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Learning rate of the weights.
    pub lr: f64,
    /// Learning rate of the architecture logits (search only).
    pub lra: f64,
    /// SGD momentum (both optimisers).
    pub momentum: f64,
    /// Weight decay (both optimisers; the logits get it too, D10).
    pub weight_decay: f64,
    /// Learning rate of the learnable quantizer parameters (LSQ steps, PACT clips; `--lrq`);
    /// `None` = `lr`. Follows the same step schedule.
    pub quant_lr: Option<f64>,
    /// Weight decay of the learnable quantizer parameters (`--wdq`; PACT's L2 term on its
    /// clip); `None` = `weight_decay`.
    pub quant_weight_decay: Option<f64>,
    /// Weight of the complexity term in the search loss (`--cd`).
    pub complexity_decay: f64,
    /// Data-loading threads.
    pub workers: usize,
    /// Log every this many steps.
    pub print_freq: usize,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
    /// Cap on training steps per epoch (smoke tests); `None` = the whole epoch.
    pub max_steps_per_epoch: Option<usize>,
    /// Cap on validation batches (smoke tests); `None` = the whole split.
    pub max_val_batches: Option<usize>,
    /// Search to a budget (`--target-bit`, `--target-bitops`): `cd` becomes a controlled
    /// quantity starting at `complexity_decay` ([`BudgetTarget`]); `None` = the reference's fixed
    /// `cd`.
    pub target: Option<BudgetTarget>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 90,
            step_epoch: 30,
            batch_size: 256,
            lr: 0.1,
            lra: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            quant_lr: None,
            quant_weight_decay: None,
            complexity_decay: 0.0,
            workers: 4,
            print_freq: 100,
            seed: 0,
            max_steps_per_epoch: None,
            max_val_batches: None,
            target: None,
        }
    }
}

impl TrainConfig {
    /// The weight learning rate of `epoch`: `lr · 0.1^⌊epoch / step_epoch⌋`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.decay(epoch)
    }

    /// The logit learning rate of `epoch`.
    pub fn lra_at(&self, epoch: usize) -> f64 {
        self.lra * self.decay(epoch)
    }

    /// The learnable quantizer parameters' learning rate of `epoch`.
    pub fn quant_lr_at(&self, epoch: usize) -> f64 {
        self.quant_lr.unwrap_or(self.lr) * self.decay(epoch)
    }

    /// The SGD settings of the optimiser groups: weights (`lr`), architecture logits (`lra`),
    /// sharing momentum and weight decay (the logits get both too, decisions.md D10), and the
    /// learnable quantizer parameters (`quant_lr`, `quant_weight_decay`, the same momentum).
    pub fn sgd_params(&self) -> (SgdParams, SgdParams, SgdParams) {
        let (momentum, weight_decay) = (self.momentum, self.weight_decay);
        (
            SgdParams { lr: self.lr, momentum, weight_decay },
            SgdParams { lr: self.lra, momentum, weight_decay },
            SgdParams {
                lr: self.quant_lr.unwrap_or(self.lr),
                momentum,
                weight_decay: self.quant_weight_decay.unwrap_or(weight_decay),
            },
        )
    }

    fn decay(&self, epoch: usize) -> f64 {
        0.1f64.powi((epoch / self.step_epoch.max(1)) as i32)
    }

    /// Checks ranges, naming the key at fault and the command-line flag that sets it. Values
    /// that would make a run empty (0 epochs, a 0-step cap) or the search meaningless (a
    /// negative `cd`) are errors.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| {
            let flag = flag_of(k).map(|f| format!(" ({f})")).unwrap_or_default();
            Err(Error::config("run configuration", format!("train.{k}{flag}"), m))
        };
        for (k, v) in [("epochs", self.epochs), ("batch_size", self.batch_size), ("step_epoch", self.step_epoch)] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        for (k, v) in [("max_steps_per_epoch", self.max_steps_per_epoch), ("max_val_batches", self.max_val_batches)] {
            if v == Some(0) {
                return bad(k, "must be at least 1 when given (0 would make the run empty)");
            }
        }
        for (k, v) in [
            ("lr", self.lr),
            ("lra", self.lra),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("quant_lr", self.quant_lr.unwrap_or(0.0)),
            ("quant_weight_decay", self.quant_weight_decay.unwrap_or(0.0)),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(k, &format!("must be a non-negative number, found {v}"));
            }
        }
        if !(self.complexity_decay.is_finite() && self.complexity_decay >= 0.0) {
            return bad(
                "complexity_decay",
                &format!(
                    "must be a non-negative number, found {} (a negative weight rewards complexity)",
                    self.complexity_decay
                ),
            );
        }
        if let Some(t) = &self.target {
            t.validate()?;
        }
        Ok(())
    }
}

/// The command-line flag that sets `train.<key>`, for error messages.
fn flag_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "epochs" => "--epochs",
        "step_epoch" => "--step-epoch",
        "batch_size" => "-b",
        "lr" => "--lr",
        "lra" => "--lra",
        "momentum" => "--momentum",
        "weight_decay" => "--wd",
        "quant_lr" => "--lrq",
        "quant_weight_decay" => "--wdq",
        "complexity_decay" => "--cd",
        "workers" => "-j",
        "print_freq" => "-p",
        "seed" => "--seed",
        "max_steps_per_epoch" => "--max-steps",
        "max_val_batches" => "--max-val-batches",
        _ => return None,
    })
}

/// Where the data comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The `DATA` folder; `None` = the embedded Fashion-MNIST subset.
    pub path: Option<PathBuf>,
    /// Force a format instead of detecting it.
    pub format: Option<DataFormat>,
    /// Skip undecodable images (counted) instead of stopping.
    pub skip_bad: bool,
}

/// A complete run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The named configuration it started from (`-a`).
    pub config_name: String,
    /// The model: backbone, plugins, quantization mode.
    pub model: ModelConfig,
    /// Hyper-parameters.
    #[serde(default)]
    pub train: TrainConfig,
    /// Data.
    #[serde(default)]
    pub data: DataConfig,
}

/// Fields that may change between a checkpoint and its resume.
const RESUMABLE: [&str; 6] = [
    "train.epochs",
    "train.workers",
    "train.print_freq",
    "train.max_steps_per_epoch",
    "train.max_val_batches",
    "data.path",
];

impl RunConfig {
    /// Starts from the registered configuration `name` with default hyper-parameters.
    pub fn named(name: &str) -> Result<Self> {
        let model = *edmips_core::registry::build_config(&edmips_core::PluginSpec::new(name))?;
        Ok(RunConfig {
            config_name: name.to_string(),
            model,
            train: TrainConfig::default(),
            data: DataConfig::default(),
        })
    }

    /// The config as a TOML table.
    pub fn to_table(&self) -> Result<toml::Table> {
        toml::Table::try_from(self).map_err(|e| Error::msg(format!("cannot serialise the run configuration: {e}")))
    }

    /// Rebuilds a config from a table, naming `context` in errors.
    pub fn from_table(t: toml::Table, context: &str) -> Result<Self> {
        let cfg: RunConfig = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(context, "(configuration)", e.message().to_string()))?;
        cfg.train.validate()?;
        Ok(cfg)
    }

    /// Merges a TOML file (a full or partial run configuration) over this one. An error names
    /// the file, the dotted key at fault and its line.
    pub fn merge_file(&self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let ctx = path.display().to_string();
        let file: toml::Table = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let at = line.map(|l| format!("line {l}")).unwrap_or_else(|| "(syntax)".into());
            Error::config(&ctx, at, e.message().to_string())
        })?;
        let base = self.to_table()?;
        let merged = edmips_core::plugin_params::merge_defaults(&base, &file);
        if let Err(e) = Self::from_table(merged.clone(), &ctx) {
            // Find the first key of the file that fails on its own, to name it and its line.
            let mut keys = Vec::new();
            flatten("", &toml::Value::Table(file.clone()), &mut keys);
            for (key, _) in keys {
                let mut one = base.clone();
                let value = lookup(&file, &key).cloned().unwrap_or(toml::Value::Boolean(false));
                if set_dotted(&mut one, &key, value).is_err() {
                    return Err(Error::config(&ctx, key_at(&key, &text), "is not a table in the run configuration"));
                }
                if let Err(Error::Config { message, .. }) = Self::from_table(one, &ctx) {
                    return Err(Error::config(&ctx, key_at(&key, &text), message));
                }
            }
            return Err(e);
        }
        Self::from_table(merged, &ctx)
    }

    /// Applies `key=value` overrides (dotted keys; values parsed as TOML, else taken as strings).
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self> {
        let mut t = self.to_table()?;
        for s in sets {
            let (key, value) = s
                .split_once('=')
                .ok_or_else(|| Error::config("--set", s.as_str(), "expected key=value, e.g. train.lr=0.05"))?;
            let key = key.trim();
            let value = parse_value(value.trim());
            set_dotted(&mut t, key, value).map_err(|m| Error::config("--set", key, m))?;
            // Deserialise after each override so an error names the override that caused it.
            Self::from_table(t.clone(), &format!("--set {key}"))?;
        }
        Self::from_table(t, "--set")
    }

    /// The fields (dotted keys, with both values) in which `other` differs from this config,
    /// ignoring those a resume may change.
    pub fn differences(&self, other: &RunConfig) -> Result<Vec<String>> {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        flatten("", &toml::Value::Table(self.to_table()?), &mut a);
        flatten("", &toml::Value::Table(other.to_table()?), &mut b);
        let am: std::collections::BTreeMap<_, _> = a.into_iter().collect();
        let bm: std::collections::BTreeMap<_, _> = b.into_iter().collect();
        let keys: std::collections::BTreeSet<&String> = am.keys().chain(bm.keys()).collect();
        Ok(keys
            .into_iter()
            .filter(|k| !RESUMABLE.contains(&k.as_str()) && am.get(*k) != bm.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
                format!("{k}: {} -> {}", show(am.get(k)), show(bm.get(k)))
            })
            .collect())
    }
}

/// `key` with the line of the file where its last segment is assigned, e.g. `train.lr (line 3)`.
fn key_at(key: &str, text: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    let line = text.lines().position(|l| {
        let l = l.trim_start();
        l.strip_prefix(last).is_some_and(|rest| rest.trim_start().starts_with('='))
            || l.starts_with(&format!("{key} ="))
    });
    match line {
        Some(i) => format!("{key} (line {})", i + 1),
        None => key.to_string(),
    }
}

fn lookup<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut cur = t.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

fn parse_value(s: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {s}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(s.to_string()))
}

fn set_dotted(t: &mut toml::Table, key: &str, value: toml::Value) -> std::result::Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|p| !p.is_empty()).ok_or("empty key")?;
    let mut cur = t;
    for p in parts {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::model_config::QuantMode;

    fn cfg() -> RunConfig {
        RunConfig {
            config_name: "x".into(),
            model: ModelConfig::edmips("tiny", QuantMode::Search { wbits: vec![1, 2], abits: vec![2] }),
            train: TrainConfig::default(),
            data: DataConfig::default(),
        }
    }

    #[test]
    fn overrides_parse_values_and_name_bad_keys() {
        let c = cfg()
            .with_overrides(&["train.lr=0.05".into(), "train.epochs=3".into(), "model.num_classes=10".into()])
            .unwrap();
        assert_eq!((c.train.lr, c.train.epochs, c.model.num_classes), (0.05, 3, 10));
        let e = cfg().with_overrides(&["train.lrr=0.05".into()]).unwrap_err().to_string();
        assert!(e.contains("--set train.lrr") && e.contains("unknown field"), "{e}");
        let e = cfg().with_overrides(&["train.lr".into()]).unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
        let e = cfg().with_overrides(&["train.batch_size=0".into()]).unwrap_err().to_string();
        assert!(e.contains("train.batch_size"), "{e}");
    }

    #[test]
    fn lr_schedule_steps_by_tenths() {
        let t = TrainConfig { lr: 0.1, step_epoch: 10, ..Default::default() };
        assert_eq!(t.lr_at(9), 0.1);
        assert!((t.lr_at(10) - 0.01).abs() < 1e-15 && (t.lr_at(25) - 0.001).abs() < 1e-15);
    }

    #[test]
    fn differences_ignore_resumable_fields() {
        let a = cfg();
        let mut b = cfg();
        b.train.epochs = 7;
        b.train.workers = 1;
        assert!(a.differences(&b).unwrap().is_empty());
        b.train.lr = 0.2;
        let d = a.differences(&b).unwrap();
        assert_eq!(d, vec!["train.lr: 0.1 -> 0.2".to_string()]);
    }
}
