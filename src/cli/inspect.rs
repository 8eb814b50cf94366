//! `edmips inspect -a NAME [--ac ARCH_FILE] [--json]`: the searchable layers of a named
//! configuration and their complexity, from the declared graph alone (no tensors are built
//! for the network).
//!
//! One row per searchable layer (index, name, kernel, channels, stride, input size,
//! size_product, memory_size, param_size, and the bits when the configuration fixes them),
//! then totals: the number of layers, Σ size_product, and the cost plugin's summary (BitOps,
//! normalised bit, bita, bitw) of the fixed bits; for a search configuration the expected bits
//! and the complexity loss at the initial logits.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use edmips_core::arch_file::load_arch_file_checked;
use edmips_core::candle::{Device, Tensor};
use edmips_core::graph::{declare_graph, resolve_mode, LayerMode};
use edmips_core::{learned_param_name, registry, BitDistribution, LayerInfo, Operand, PluginSpec, RelaxContext};
use edmips_core::{CostSummary, FixedBits, LayerBits, QuantMode, FULL_PRECISION_BITS};
use serde_json::{json, Value};

/// Arguments of `edmips inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The named configuration (see `edmips list --kind config`).
    #[arg(short = 'a', long = "arch")]
    arch: String,
    /// Architecture file (per-layer bits) for the `*_cfg` configurations.
    #[arg(long = "ac")]
    ac: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What the totals section reports.
struct Totals {
    mode: &'static str,
    summary: CostSummary,
    /// Search only: per-layer expected (E[a], E[w]) at the initial logits, and the complexity loss.
    expected: Option<(Vec<(f64, f64)>, f64)>,
}

/// Runs `edmips inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let cfg = registry::build_config(&PluginSpec::new(&args.arch))?;
    let graph = declare_graph(&cfg)?;
    let layers = graph.searchable_layers();

    let arch = match (&cfg.mode, &args.ac) {
        (QuantMode::Fixed { bits: FixedBits::ArchFile }, Some(path)) => {
            let act = registry::build_quantizer(&cfg.act_quantizer)?;
            let weight = registry::build_quantizer(&cfg.weight_quantizer)?;
            Some(load_arch_file_checked(path, layers, act.as_ref(), weight.as_ref())?)
        }
        _ => None,
    };
    let mode = resolve_mode(&cfg, &args.arch, layers, arch.as_deref())?;
    let cost = edmips_core::graph::build_cost(&cfg, &graph, &mode)?;
    let (fixed, totals) = match &mode {
        LayerMode::Search { wbits, abits } => {
            let relax = registry::build_relaxation(&cfg.relaxation)?;
            let ctx = RelaxContext::default();
            let dist = |bits: &[u32]| -> Result<BitDistribution> {
                let logits = Tensor::from_vec(relax.init_logits(bits.len()), bits.len(), &Device::Cpu)?;
                Ok(BitDistribution { bits: bits.to_vec(), probs: relax.weights(&logits, &ctx)? })
            };
            let (a, w) = (dist(abits)?, dist(wbits)?);
            let ea = a.expected()?.to_scalar::<f32>()? as f64;
            let ew = w.expected()?.to_scalar::<f32>()? as f64;
            let dists = vec![(a.clone(), w.clone()); layers.len()];
            let loss = cost.complexity(layers, &dists)?.to_scalar::<f32>()? as f64;
            let lb = vec![LayerBits { wbit: ew, abit: ea }; layers.len()];
            let summary = cost.summarize(layers, &lb);
            (None, Totals { mode: "search", summary, expected: Some((vec![(ea, ew); layers.len()], loss)) })
        }
        LayerMode::Fixed(bits) => {
            let lb: Vec<LayerBits> = bits.iter().map(|&(w, a)| LayerBits { wbit: w as f64, abit: a as f64 }).collect();
            (Some(bits.clone()), Totals { mode: "fixed", summary: cost.summarize(layers, &lb), expected: None })
        }
        LayerMode::FullPrecision => {
            let full = FULL_PRECISION_BITS;
            let bits = vec![(full, full); layers.len()];
            let lb = vec![LayerBits { wbit: full as f64, abit: full as f64 }; layers.len()];
            (Some(bits), Totals { mode: "full_precision", summary: cost.summarize(layers, &lb), expected: None })
        }
    };
    let sp_total: f64 = layers.iter().map(|l| l.size_product() as f64).sum();
    let learned = learned_names(&cfg, &mode, layers.len())?;
    let learned_total: usize = learned.iter().map(Vec::len).sum();

    if args.json {
        let rows: Vec<Value> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut r = layer_json(l);
                if let Some(f) = &fixed {
                    r["wbit"] = json!(f[i].0);
                    r["abit"] = json!(f[i].1);
                }
                if !learned[i].is_empty() {
                    r["learned"] = json!(learned[i]);
                }
                r
            })
            .collect();
        let mut t = json!({
            "layers": layers.len(),
            "size_product": sp_total,
            "memory_size": layers.iter().map(|l| l.memory_size() as f64).sum::<f64>(),
            "param_size": layers.iter().map(|l| l.param_size()).sum::<f64>(),
            "cost": cost.id(),
            "headline": totals.summary.headline,
            "metrics": totals.summary.metrics,
        });
        if let Some((e, loss)) = &totals.expected {
            t["expected_abit"] = json!(e.first().map(|x| x.0));
            t["expected_wbit"] = json!(e.first().map(|x| x.1));
            t["complexity_loss_at_init"] = json!(loss);
        }
        let out = json!({
            "config": args.arch,
            "backbone": graph.backbone,
            "input": graph.input,
            "num_classes": graph.num_classes,
            "mode": totals.mode,
            "layers": rows,
            "totals": t,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let s = &graph.input;
    println!(
        "{}: backbone `{}`, input {}x{}x{}, {} classes, mode {}",
        args.arch, graph.backbone, s.channels, s.size, s.size, graph.num_classes, totals.mode
    );
    let wname = layers.iter().map(|l| l.name.len()).max().unwrap_or(4).max(4);
    let bits_hdr = if fixed.is_some() { "  wbit  abit" } else { "" };
    println!(
        "{:>4}  {:wname$}  {:>6}  {:>5}  {:>5}  {:>6}  {:>7}  {:>12}  {:>11}  {:>10}{bits_hdr}",
        "idx", "name", "kernel", "in", "out", "stride", "input", "size_prod(M)", "memory(K)", "params(M)"
    );
    for (i, l) in layers.iter().enumerate() {
        let bits = fixed.as_ref().map(|f| format!("  {:>4}  {:>4}", f[i].0, f[i].1)).unwrap_or_default();
        println!(
            "{:>4}  {:wname$}  {:>6}  {:>5}  {:>5}  {:>6}  {:>7}  {:>12.6}  {:>11.3}  {:>10.6}{bits}",
            l.index,
            l.name,
            format!("{}x{}", l.kernel.0, l.kernel.1),
            l.in_channels,
            l.out_channels,
            l.stride.0,
            format!("{}x{}", l.input_hw.0, l.input_hw.1),
            l.size_product(),
            l.memory_size(),
            l.param_size(),
        );
    }
    println!();
    println!("searchable layers: {}", layers.len());
    println!("sum size_product:  {sp_total:.3} M");
    if let Some(i) = learned.iter().position(|l| !l.is_empty()) {
        println!(
            "learnable quantizer parameters (optimiser group `quant`): {learned_total} in all; layer `{}` has {}",
            layers[i].name,
            learned[i].join(", ")
        );
    }
    if let Some((e, loss)) = &totals.expected {
        if let Some((ea, ew)) = e.first() {
            println!("at the initial logits: E[abit] = {ea:.4}, E[wbit] = {ew:.4}");
        }
        println!("complexity loss at init ({}): {loss:.4}", cost.id());
        println!("expected-value summary:");
    }
    for m in &totals.summary.metrics {
        println!("  {:14} {:>14.4} {}", m.name, m.value, m.unit);
    }
    println!("{}: {:.3}", totals.summary.headline.name, totals.summary.headline.value);
    Ok(())
}

/// The learnable quantizer parameters each layer will have (names without the layer prefix),
/// as the network declares them ([`edmips_core::Quantizer::params`]).
fn learned_names(cfg: &edmips_core::ModelConfig, mode: &LayerMode, n: usize) -> Result<Vec<Vec<String>>> {
    let act = registry::build_quantizer(&cfg.act_quantizer)?;
    let weight = registry::build_quantizer(&cfg.weight_quantizer)?;
    Ok(edmips_core::graph::mode_bits(mode, n)
        .into_iter()
        .map(|(wbits, abits)| {
            let names = |q: &dyn edmips_core::Quantizer, op: Operand, bits: &[u32]| -> Vec<String> {
                bits.iter()
                    .flat_map(|&b| q.params(op, b).into_iter().map(move |p| learned_param_name(op, &p.name, b)))
                    .collect()
            };
            let mut v = names(act.as_ref(), Operand::Activation, &abits);
            v.extend(names(weight.as_ref(), Operand::Weight, &wbits));
            v
        })
        .collect())
}

fn layer_json(l: &LayerInfo) -> Value {
    json!({
        "index": l.index,
        "name": l.name,
        "kernel": [l.kernel.0, l.kernel.1],
        "in_channels": l.in_channels,
        "out_channels": l.out_channels,
        "stride": l.stride.0,
        "padding": l.padding,
        "input_hw": [l.input_hw.0, l.input_hw.1],
        "output_hw": [l.output_hw.0, l.output_hw.1],
        "size_product": l.size_product() as f64,
        "memory_size": l.memory_size() as f64,
        "param_size": l.param_size(),
    })
}
