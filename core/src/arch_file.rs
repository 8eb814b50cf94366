//! Architecture files: the per-layer `(wbit, abit)` a search produced, read back by the
//! `*_cfg` configurations (the reference's `_load_arch`, decisions.md R12, D12).
//!
//! Two JSON forms are accepted:
//!
//! * what search writes: an object with a `"layers"` array whose entries have `"wbit"` and
//!   `"abit"` and usually `"name"` (names, when present, must match the network's layers in
//!   order): `{"layers": [{"name": "layer1.0.conv1", "wbit": 2, "abit": 3}, ...]}`;
//! * a plain list of `[wbit, abit]` pairs: `[[2, 3], [1, 2], ...]`.
//!
//! Every error is an [`Error::ArchFile`] naming the file and the entry or layer at fault.

use std::path::Path;

use serde_json::{json, Value};

use crate::bits::check_layer_bits;
use crate::error::{Error, Result};
use crate::layer_info::LayerInfo;
use crate::traits::Quantizer;

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::ArchFile { path: path.to_path_buf(), message: message.into() }
}

fn bit(path: &Path, i: usize, v: Option<&Value>, key: &str) -> Result<u32> {
    let v = v.ok_or_else(|| err(path, format!("entry {i}: missing `{key}` (expected a positive integer)")))?;
    v.as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| err(path, format!("entry {i}: `{key}` must be a positive integer, found {v}")))
}

/// Parses the JSON text of an architecture file for a network with these `layers`; `path`
/// names the file in errors.
pub fn parse_arch(text: &str, path: &Path, layers: &[LayerInfo]) -> Result<Vec<(u32, u32)>> {
    let v: Value = serde_json::from_str(text).map_err(|e| err(path, format!("not valid JSON: {e}")))?;
    let (entries, form) = match &v {
        Value::Array(a) => (a, "list"),
        Value::Object(o) => match o.get("layers") {
            Some(Value::Array(a)) => (a, "object"),
            _ => return Err(err(path, "expected an object with a `layers` array, or a list of [wbit, abit] pairs")),
        },
        _ => return Err(err(path, "expected an object with a `layers` array, or a list of [wbit, abit] pairs")),
    };
    let mut bits = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let pair = match (form, e) {
            ("list", Value::Array(p)) if p.len() == 2 => {
                (bit(path, i, p.first(), "wbit")?, bit(path, i, p.get(1), "abit")?)
            }
            ("list", _) => return Err(err(path, format!("entry {i}: expected a [wbit, abit] pair, found {e}"))),
            (_, Value::Object(o)) => {
                if let (Some(name), Some(l)) = (o.get("name"), layers.get(i)) {
                    let name = name.as_str().ok_or_else(|| err(path, format!("entry {i}: `name` must be a string")))?;
                    if name != l.name {
                        return Err(err(
                            path,
                            format!("entry {i} is named `{name}` but layer {i} of this network is `{}`", l.name),
                        ));
                    }
                }
                (bit(path, i, o.get("wbit"), "wbit")?, bit(path, i, o.get("abit"), "abit")?)
            }
            _ => {
                return Err(err(
                    path,
                    format!("entry {i}: expected an object with `name`, `wbit` and `abit`, found {e}"),
                ))
            }
        };
        bits.push(pair);
    }
    if bits.len() != layers.len() {
        return Err(err(
            path,
            format!("wrong number of layers: expected {} for this network, found {}", layers.len(), bits.len()),
        ));
    }
    Ok(bits)
}

/// Reads an architecture file for a network with these `layers` (see the [module docs](self)).
pub fn load_arch_file(path: &Path, layers: &[LayerInfo]) -> Result<Vec<(u32, u32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read the file: {e}")))?;
    parse_arch(&text, path, layers)
}

/// Checks every layer's bits against the quantizers; an error names the file and the layer.
pub fn check_arch_bits(
    path: &Path,
    layers: &[LayerInfo],
    bits: &[(u32, u32)],
    act: &dyn Quantizer,
    weight: &dyn Quantizer,
) -> Result<()> {
    for (l, &(w, a)) in layers.iter().zip(bits) {
        check_layer_bits(w, a, act, weight).map_err(|e| err(path, format!("layer {} `{}`: {e}", l.index, l.name)))?;
    }
    Ok(())
}

/// [`load_arch_file`] then [`check_arch_bits`].
pub fn load_arch_file_checked(
    path: &Path,
    layers: &[LayerInfo],
    act: &dyn Quantizer,
    weight: &dyn Quantizer,
) -> Result<Vec<(u32, u32)>> {
    let bits = load_arch_file(path, layers)?;
    check_arch_bits(path, layers, &bits, act, weight)?;
    Ok(bits)
}

/// The JSON object form of an architecture: `{"layers": [{"index", "name", "wbit", "abit"}]}`.
pub fn arch_json(layers: &[LayerInfo], bits: &[(u32, u32)]) -> Value {
    let entries: Vec<Value> = layers
        .iter()
        .zip(bits)
        .map(|(l, &(w, a))| json!({"index": l.index, "name": l.name, "wbit": w, "abit": a}))
        .collect();
    json!({ "layers": entries })
}
