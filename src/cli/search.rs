//! `edmips search`: mixed-precision search (the reference's `search.py`).

use crate::engine::budget::BudgetTarget;
use crate::engine::{run, RunKind};
use anyhow::Result;
use clap::Args;

use super::run_args::RunArgs;

/// Arguments of `edmips search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Learning rate of the architecture logits [default: 0.01; default job: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    lra: Option<f64>,
    /// Weight of the complexity term [default: 0; default job: 0.003].
    #[arg(long = "cd", visible_alias = "complexity-decay", allow_negative_numbers = true)]
    cd: Option<f64>,
    /// Search to this normalised bit (the cost's `bit` metric): `cd` is controlled from its
    /// start value, and the final architecture is repaired to within 0.01 bit [default job: 2.0].
    #[arg(long = "target-bit", allow_negative_numbers = true, conflicts_with = "target_bitops")]
    target_bit: Option<f64>,
    /// Search to this many BitOps (the cost's `bitops` metric, in its unit).
    #[arg(long = "target-bitops", allow_negative_numbers = true)]
    target_bitops: Option<f64>,
}

/// Runs `edmips search`.
pub fn run_search(args: &SearchArgs) -> Result<()> {
    let default_job = args.run.default_job();
    let cfg = args.run.resolve(RunKind::Search, |c| {
        if let Some(v) = args.lra {
            c.train.lra = v;
        }
        if let Some(v) = args.cd {
            c.train.complexity_decay = v;
        }
        if default_job && args.cd.is_some() {
            // `--cd` alone asks for the reference's fixed weight, also in the default job.
            c.train.target = None;
        }
        if let Some(v) = args.target_bit {
            c.train.target = Some(BudgetTarget::new("bit", v));
        }
        if let Some(v) = args.target_bitops {
            c.train.target = Some(BudgetTarget { tolerance: 0.005 * v.abs(), ..BudgetTarget::new("bitops", v) });
        }
    })?;
    let opts = args.run.options(&cfg, None)?;
    let out = opts.out.clone();
    let arch = cfg.config_name.clone();
    let summary = run(RunKind::Search, cfg.clone(), opts)?;
    if summary.interrupted {
        return Err(super::Interrupted { command: "search", checkpoint: summary.checkpoint }.into());
    }
    if args.run.evaluate || summary.already_finished && summary.report.is_none() {
        return Ok(());
    }
    if let Some(r) = &summary.report {
        let bits: Vec<String> = r.layers.iter().map(|l| format!("w{}a{}", l.wbit, l.abit)).collect();
        println!("\nsearch finished after {} epochs (best val top-1 {:.2}%)", summary.epochs_done, summary.best_acc1);
        println!("chosen bits per layer: {}", bits.join(" "));
        let bit = r.argmax.headline.value;
        let expected = r.expected.as_ref().map(|e| format!(" (expected {:.3})", e.headline.value)).unwrap_or_default();
        println!("normalised bit {bit:.3}{expected}; architecture: {}", out.join("arch.json").display());
        if let (Some(t), Some(rep)) = (&cfg.train.target, &r.repair) {
            println!(
                "budget: {} target {} reached {:.4} (the argmax had {:.4}; {} layer change(s) by the repair)",
                t.metric,
                t.value,
                rep.after,
                rep.before,
                rep.changes.len()
            );
        } else if let Some(t) = &cfg.train.target {
            println!("budget: {} target {}: the argmax met it without repair", t.metric, t.value);
        }
        let quant = retrain_config(&arch, &cfg.model);
        let mut cmd = format!("edmips train -a {quant} --ac {}", out.join("arch.json").display());
        if let Some(d) = &cfg.data.path {
            cmd += &format!(" {}", d.display());
        }
        cmd += &format!(" --epochs {}", cfg.train.epochs);
        println!("retrain it with:\n  {cmd}");
    }
    Ok(())
}

/// The registered configuration that retrains the architecture a search with model `model`
/// finds: one whose bits come from an architecture file, with the same backbone and the same
/// quantizers (`mixres18_w1234a234` -> `quantres18_cfg`, `mixres20_lsq_w1234a234` ->
/// `quantres20_lsq_cfg`), preferring the `quant*_cfg` named after the search. Without one, that
/// `quant*_cfg` with `--set` overrides for the quantizers it does not share.
pub fn retrain_config(arch: &str, model: &edmips_core::ModelConfig) -> String {
    use edmips_core::registry::{self, PluginKind};
    use edmips_core::{FixedBits, PluginSpec, QuantMode};
    let build = |id: &str| registry::build_config(&PluginSpec::new(id)).ok();
    let retrains = |c: &edmips_core::ModelConfig| {
        matches!(c.mode, QuantMode::Fixed { bits: FixedBits::ArchFile }) && c.backbone.id == model.backbone.id
    };
    let same_quantizers = |c: &edmips_core::ModelConfig| {
        c.act_quantizer == model.act_quantizer && c.weight_quantizer == model.weight_quantizer
    };
    let base = arch.strip_prefix("mix").and_then(|r| r.split_once('_')).map(|(net, _)| format!("quant{net}_cfg"));
    if let Some(b) = &base {
        if build(b).is_some_and(|c| retrains(&c) && same_quantizers(&c)) {
            return b.clone();
        }
    }
    let ids: Vec<String> =
        registry::list(PluginKind::Config).map(|l| l.into_iter().map(|e| e.id).collect()).unwrap_or_default();
    if let Some(id) = ids.iter().find(|id| build(id).is_some_and(|c| retrains(&c) && same_quantizers(&c))) {
        return id.clone();
    }
    let Some(base) = base else {
        return format!("<a configuration of {arch} with bits from an architecture file>");
    };
    let mut s = base.clone();
    if let Some(b) = build(&base) {
        for (key, want, has) in [
            ("act_quantizer", &model.act_quantizer, &b.act_quantizer),
            ("weight_quantizer", &model.weight_quantizer, &b.weight_quantizer),
        ] {
            if want != has {
                s += &format!(" --set model.{key}.id={}", want.id);
            }
        }
    }
    s
}
