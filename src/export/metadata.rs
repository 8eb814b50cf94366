//! The exported model's `metadata_props`: what a consumer needs besides the graph.
//!
//! | key | value |
//! |---|---|
//! | `edmips.format` | `qonnx` or `onnx` |
//! | `edmips.config` | the named configuration |
//! | `edmips.layers` | JSON list, per quantized conv: `index`, `name`, `wbit`, `abit`, and the `act` and `weight` quantizer forms (`uniform` with scale, zero point, bits, signed, narrow, rounding; `relu`; `identity`) |
//! | `edmips.bitops`, `edmips.bit` | BitOps and the normalised bit, from the cost plugin's summary (when it reports them) |
//! | `edmips.cost` | the cost plugin's whole summary (JSON: headline and metrics) |
//! | `edmips.input` | JSON: channels, size, mean, std; the graph input is `(pixel/255 − mean)/std` |
//! | `edmips.batch_norm` | how batch norm is written (kept, eval mode) |
//! | `edmips.weights` | what the weight initializers of quantized convs hold |

use serde_json::json;

use super::format::Format;
use super::lower::{ExportInput, LayerExport};
use edmips_core::traits::LayerBits;
use edmips_core::QuantExport;

/// A quantizer form as JSON.
fn form_json(q: &QuantExport) -> serde_json::Value {
    match q {
        QuantExport::Uniform(u) => json!({
            "kind": "uniform", "scale": u.scale, "zero_point": u.zero_point, "bits": u.bits,
            "signed": u.signed, "narrow": u.narrow, "rounding": u.rounding.qonnx_mode(),
        }),
        QuantExport::Relu => json!({"kind": "relu"}),
        QuantExport::Identity => json!({"kind": "identity"}),
    }
}

/// The metadata entries of an export, in order.
pub fn metadata(input: &ExportInput, format: Format, layers: &[LayerExport]) -> Vec<(String, String)> {
    let net_layers = input.net.searchable_layers();
    let bits: Vec<LayerBits> =
        layers.iter().map(|l| LayerBits { wbit: f64::from(l.wbit), abit: f64::from(l.abit) }).collect();
    let summary = input.cost.summarize(net_layers, &bits);
    let spec = &input.net.graph().input;
    let per_layer: Vec<_> = layers
        .iter()
        .map(|l| {
            json!({"index": l.index, "name": l.name, "wbit": l.wbit, "abit": l.abit,
                   "act": form_json(&l.act), "weight": form_json(&l.weight)})
        })
        .collect();
    let mut m = vec![
        ("edmips.format".to_string(), format.name().to_string()),
        ("edmips.config".to_string(), input.config_name.to_string()),
        ("edmips.layers".to_string(), serde_json::Value::Array(per_layer).to_string()),
    ];
    for key in ["bitops", "bit"] {
        if let Some(v) = summary.get(key) {
            m.push((format!("edmips.{key}"), format!("{v}")));
        }
    }
    m.push(("edmips.cost".to_string(), json!({"id": input.cost.id(), "summary": summary}).to_string()));
    m.push((
        "edmips.input".to_string(),
        json!({"channels": spec.channels, "size": spec.size, "mean": spec.mean, "std": spec.std,
               "note": "the graph input is the normalised image (pixel/255 - mean)/std, NCHW"})
        .to_string(),
    ));
    m.push((
        "edmips.batch_norm".to_string(),
        "BatchNormalization nodes in eval mode (running statistics), not folded into the convolutions".to_string(),
    ));
    let weights = match format {
        Format::Qonnx => {
            "quantized convs: the weight initializer holds the quantizer's output Q(W) (its exact levels); \
             the weight Quant node after it carries scale, zero point and bit width and is the identity on it"
        }
        Format::Onnx => "quantized convs: the weight initializer holds the quantizer's output Q(W) (its exact levels)",
    };
    m.push(("edmips.weights".to_string(), weights.to_string()));
    m
}
