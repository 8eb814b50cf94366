//! `edmips list [--kind K] [--filter TEXT] [--json]`: the registries' contents, with each
//! plugin's parameters (type, default, doc) from its one typed definition.

use anyhow::Result;
use clap::Args;
use edmips_core::registry::{self, EntryInfo, PluginKind};

/// Arguments of `edmips list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this kind: quantizer, relaxation, cost, backbone or config.
    #[arg(long)]
    kind: Option<String>,
    /// Only entries whose id or summary contains this text (case-insensitive).
    #[arg(long)]
    filter: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `edmips list`.
pub fn run(args: &ListArgs) -> Result<()> {
    let kinds = match &args.kind {
        Some(k) => vec![PluginKind::parse(k)?],
        None => PluginKind::ALL.to_vec(),
    };
    let mut groups: Vec<(PluginKind, Vec<EntryInfo>)> = Vec::new();
    let filter = args.filter.as_ref().map(|f| f.to_lowercase());
    for k in kinds {
        let mut entries = registry::list(k)?;
        if let Some(f) = &filter {
            entries.retain(|e| e.id.to_lowercase().contains(f) || e.summary.to_lowercase().contains(f));
        }
        groups.push((k, entries));
    }
    if args.json {
        let all: Vec<&EntryInfo> = groups.iter().flat_map(|g| g.1.iter()).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let width = groups.iter().flat_map(|g| g.1.iter()).map(|e| e.id.len()).max().unwrap_or(0);
    if filter.is_some() {
        groups.retain(|g| !g.1.is_empty());
        if groups.is_empty() {
            println!("no registered id or summary contains `{}`", args.filter.as_deref().unwrap_or(""));
        }
    }
    for (i, (kind, entries)) in groups.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{kind}:");
        if entries.is_empty() {
            println!("  (none registered)");
        }
        for e in entries {
            // Typed parameters are listed one per line below; a table of defaults inline.
            let defaults = if e.defaults.is_empty() || !e.params.is_empty() {
                String::new()
            } else {
                format!("  [{}]", inline(&e.defaults))
            };
            let mixture = match kind {
                PluginKind::Quantizer => match registry::build_quantizer(&edmips_core::PluginSpec::new(&e.id)) {
                    Ok(q) => {
                        let mix =
                            if q.has_fused_mix() { "fused mixture kernel, CPU + CUDA" } else { "composed mixture" };
                        format!("  ({mix}{})", learned_summary(q.as_ref()))
                    }
                    Err(_) => String::new(),
                },
                _ => String::new(),
            };
            println!("  {:width$}  {}{}{mixture}", e.id, e.summary, defaults);
            for p in &e.params {
                let default = p.default.as_ref().map(|v| format!(" = {v}")).unwrap_or_default();
                println!("  {:width$}    {}: {}{default}  {}", "", p.name, p.ty, p.doc);
            }
        }
    }
    Ok(())
}

fn inline(t: &toml::Table) -> String {
    t.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

/// `; learns step per layer and bit width (data-initialised)` for a learnable quantizer, from
/// what it declares at 2 bits for each operand it supports; empty for a parameter-free one.
fn learned_summary(q: &dyn edmips_core::Quantizer) -> String {
    use edmips_core::Operand;
    let mut names: Vec<String> = Vec::new();
    for op in [Operand::Activation, Operand::Weight] {
        if q.check(op, 2).is_err() {
            continue;
        }
        for p in q.params(op, 2) {
            let n = format!("{}{}", p.name, if p.data_init { " (initialised from data)" } else { "" });
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    if names.is_empty() {
        String::new()
    } else {
        format!("; learns {} per layer and bit width", names.join(", "))
    }
}
