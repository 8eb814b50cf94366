//! `edmips list [--kind K] [--json]`: the registries' contents.

use anyhow::Result;
use clap::Args;
use edmips_core::registry::{self, EntryInfo, PluginKind};

/// Arguments of `edmips list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this kind: quantizer, relaxation, cost, backbone or config.
    #[arg(long)]
    kind: Option<String>,
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
    for k in kinds {
        groups.push((k, registry::list(k)?));
    }
    if args.json {
        let all: Vec<&EntryInfo> = groups.iter().flat_map(|g| g.1.iter()).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let width = groups.iter().flat_map(|g| g.1.iter()).map(|e| e.id.len()).max().unwrap_or(0);
    for (i, (kind, entries)) in groups.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{kind}:");
        if entries.is_empty() {
            println!("  (none registered)");
        }
        for e in entries {
            let defaults = if e.defaults.is_empty() { String::new() } else { format!("  [{}]", inline(&e.defaults)) };
            println!("  {:width$}  {}{}", e.id, e.summary, defaults);
        }
    }
    Ok(())
}

fn inline(t: &toml::Table) -> String {
    t.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}
