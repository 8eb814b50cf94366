//! A quantizer's [`QuantExport`] written as graph nodes, per [`Format`].
//!
//! One uniform quantizer `y = s·(round(clip(x/s + z, q_min, q_max)) − z)` becomes
//!
//! * **QONNX**: one `Quant` node (domain [`QONNX_DOMAIN`]) with inputs `x`, `scale`, `zeropt`,
//!   `bitwidth` (float32 scalar initializers) and attributes `signed`, `narrow`,
//!   `rounding_mode` (`"ROUND"` is half to even);
//! * **ONNX**: `Div(x, s)`, `Add(·, z)` (when `z ≠ 0`), `Clip(·, q_min, q_max)`, `Round`,
//!   `Sub(·, z)` (when `z ≠ 0`), `Mul(·, s)`: the same operations in the same order (ONNX
//!   `Round` is half to even).
//!
//! `Relu` is an ONNX `Relu` in both formats and `Identity` writes nothing.

use super::emitter::Emitter;
use super::format::Format;
use super::model::AttrValue;
use edmips_core::{QuantExport, UniformQuant};

/// The operator domain of QONNX's `Quant`.
pub const QONNX_DOMAIN: &str = "qonnx.custom_op.general";

/// Writes `q` applied to the value `x` under the name prefix `name`; returns the output value.
pub fn emit_quant(e: &mut Emitter, format: Format, name: &str, x: &str, q: &QuantExport) -> String {
    match q {
        QuantExport::Identity => x.to_string(),
        QuantExport::Relu => e.node(name, "Relu", vec![x.to_string()], vec![]),
        QuantExport::Uniform(u) => match format {
            Format::Qonnx => emit_qonnx(e, name, x, u),
            Format::Onnx => emit_onnx(e, name, x, u),
        },
    }
}

fn emit_qonnx(e: &mut Emitter, name: &str, x: &str, u: &UniformQuant) -> String {
    let scale = e.scalar(&format!("{name}.scale"), u.scale);
    let zero = e.scalar(&format!("{name}.zeropt"), u.zero_point);
    let bits = e.scalar(&format!("{name}.bitwidth"), u.bits as f32);
    e.node_in(
        QONNX_DOMAIN,
        name,
        "Quant",
        vec![x.to_string(), scale, zero, bits],
        vec![
            ("signed", AttrValue::Int(u.signed as i64)),
            ("narrow", AttrValue::Int(u.narrow as i64)),
            ("rounding_mode", AttrValue::String(u.rounding.qonnx_mode().to_string())),
        ],
    )
}

fn emit_onnx(e: &mut Emitter, name: &str, x: &str, u: &UniformQuant) -> String {
    let (lo, hi) = u.int_range();
    let scale = e.scalar(&format!("{name}.scale"), u.scale);
    let mut v = e.node(&format!("{name}.div"), "Div", vec![x.to_string(), scale.clone()], vec![]);
    let zero = (u.zero_point != 0.0).then(|| e.scalar(&format!("{name}.zeropt"), u.zero_point));
    if let Some(z) = &zero {
        v = e.node(&format!("{name}.add_zeropt"), "Add", vec![v, z.clone()], vec![]);
    }
    let qmin = e.scalar(&format!("{name}.qmin"), lo as f32);
    let qmax = e.scalar(&format!("{name}.qmax"), hi as f32);
    v = e.node(&format!("{name}.clip"), "Clip", vec![v, qmin, qmax], vec![]);
    v = e.node(&format!("{name}.round"), u.rounding.onnx_op(), vec![v], vec![]);
    if let Some(z) = zero {
        v = e.node(&format!("{name}.sub_zeropt"), "Sub", vec![v, z], vec![]);
    }
    e.node(name, "Mul", vec![v, scale], vec![])
}
