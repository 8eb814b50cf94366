//! `edmips export`: a retrained network as a QONNX or plain ONNX file, for compilers and
//! runtimes.
//!
//! Standard ONNX's `QuantizeLinear` stops at 4/8-bit integers, so a sub-4-bit, per-layer mixed
//! network is written in QONNX, whose `Quant` node carries any bit width, or in standard
//! operators only (quantizers as arithmetic, weights as their quantized values).
//!
//! * [`proto`]: a minimal protocol-buffers encoder;
//! * [`model`]: the ONNX messages edmips writes, and their encoding;
//! * [`format`](mod@format): QONNX or ONNX;
//! * [`emitter`]: the graph under construction;
//! * [`quant_nodes`]: a quantizer's [`QuantExport`](edmips_core::QuantExport) as nodes;
//! * [`lower`]: the network, node by node (batch norm kept, in eval mode);
//! * [`metadata`]: configuration, per-layer bits, BitOps and normalised bit;
//! * [`source`]: loading a retrain checkpoint;
//! * [`error`]: what can go wrong.
//!
//! A quantizer is exported through its own description
//! ([`Quantizer::export_form`](edmips_core::Quantizer::export_form)); a plugin without one
//! makes the export fail with an error naming it. The README's "Exporting" section shows the
//! nodes of one quantized conv in each format.

pub mod emitter;
pub mod error;
pub mod format;
pub mod lower;
pub mod metadata;
pub mod model;
pub mod proto;
pub mod quant_nodes;
pub mod source;

use std::path::Path;

pub use error::{ExportError, Result};
pub use format::Format;
pub use lower::{ExportInput, LayerExport};
pub use source::{load_retrained, ExportSource};

use model::{Dim, Model, ValueInfo};

/// The ONNX IR version written.
pub const IR_VERSION: i64 = 8;
/// The ONNX operator set the graphs use.
pub const ONNX_OPSET: i64 = 13;

/// An exported model and how each quantized conv was written.
#[derive(Debug)]
pub struct Exported {
    /// The model.
    pub model: Model,
    /// Per searchable layer: bits and quantizer forms.
    pub layers: Vec<LayerExport>,
}

impl ExportSource {
    /// The [`ExportInput`] of this source.
    pub fn input(&self) -> ExportInput<'_> {
        ExportInput {
            net: &self.net,
            config_name: &self.config.config_name,
            act_quantizer: self.act_quantizer.as_ref(),
            weight_quantizer: self.weight_quantizer.as_ref(),
            cost: self.cost.as_ref(),
        }
    }
}

/// Builds the model of `input` in `format`, with the batch dimension fixed at `batch` (or
/// free, `N`, when `None`).
pub fn export_model(input: &ExportInput, format: Format, batch: Option<usize>) -> Result<Exported> {
    let lowered = lower::lower(input, format, batch)?;
    let mut graph = lowered.emitter.graph;
    let g = input.net.graph();
    let batch = || lower::batch_dim(batch);
    let spec = &g.input;
    graph.inputs.push(ValueInfo::f32(
        "input",
        vec![batch(), Dim::Value(spec.channels as i64), Dim::Value(spec.size as i64), Dim::Value(spec.size as i64)],
    ));
    graph.outputs.push(ValueInfo::f32("logits", vec![batch(), Dim::Value(g.num_classes as i64)]));
    let mut opsets = vec![(String::new(), ONNX_OPSET)];
    if format == Format::Qonnx {
        opsets.push((quant_nodes::QONNX_DOMAIN.to_string(), 1));
    }
    let metadata = metadata::metadata(input, format, &lowered.layers);
    let model = Model {
        ir_version: IR_VERSION,
        opsets,
        producer_name: "edmips".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} ({}), exported by edmips", input.config_name, format.name()),
        graph,
        metadata,
    };
    Ok(Exported { model, layers: lowered.layers })
}

/// Writes `model` to `path` atomically.
pub fn write_model(model: &Model, path: &Path) -> Result<()> {
    Ok(crate::engine::atomic::write_atomic(path, &model.encode())?)
}
