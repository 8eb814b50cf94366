//! `edmips export`: a retrained checkpoint as a QONNX or plain ONNX file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::export::{export_model, load_retrained, write_model, ExportError, Format};

/// An [`ExportError`] as one message: its text already includes the OS error, which
/// anyhow's chain would print a second time.
fn flat(e: ExportError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Parses `--batch-size`: a whole number of at least 1.
fn batch_size(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number: {e}")),
    }
}

/// Arguments of `edmips export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The retrain checkpoint to export (`checkpoint.safetensors` or `best.safetensors` of an
    /// `edmips train` run). Its metadata holds the configuration and the per-layer bits.
    #[arg(long)]
    pub resume: PathBuf,
    /// The file to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// `qonnx` (Quant nodes, domain qonnx.custom_op.general) or `onnx` (standard operators only).
    #[arg(long, default_value = "qonnx")]
    pub format: Format,
    /// Fix the batch dimension at this size [default: 1 for qonnx, whose executor and FINN
    /// need fixed shapes; free (`N`) for onnx].
    #[arg(long = "batch-size", short = 'b', value_parser = batch_size)]
    pub batch_size: Option<usize>,
    /// The architecture file the run was trained with; when given it must match the
    /// checkpoint's bits.
    #[arg(long = "ac", visible_alias = "arch-cfg")]
    pub arch_cfg: Option<PathBuf>,
}

/// Runs `edmips export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    if !args.resume.is_file() {
        anyhow::bail!("--resume `{}`: no such checkpoint file", args.resume.display());
    }
    if let Some(p) = &args.arch_cfg {
        if !p.is_file() {
            anyhow::bail!("--ac `{}`: no such architecture file", p.display());
        }
    }
    let src = load_retrained(&args.resume, args.arch_cfg.as_deref(), &candle_core::Device::Cpu).map_err(flat)?;
    let batch = args.batch_size.or(match args.format {
        Format::Qonnx => Some(1),
        Format::Onnx => None,
    });
    let exported = export_model(&src.input(), args.format, batch).map_err(flat)?;
    write_model(&exported.model, &args.out).map_err(flat)?;
    let meta = |k: &str| exported.model.metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let nodes = exported.model.graph.nodes.len();
    println!(
        "exported {} ({} quantized convs, {} nodes, bit {}, BitOps {}) as {} to {}",
        src.config.config_name,
        exported.layers.len(),
        nodes,
        meta("edmips.bit").unwrap_or_else(|| "-".into()),
        meta("edmips.bitops").unwrap_or_else(|| "-".into()),
        args.format,
        args.out.display()
    );
    Ok(())
}
