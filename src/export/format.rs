//! The two export formats ([`Format`]).

use std::fmt;
use std::str::FromStr;

/// What `edmips export --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// QONNX: every quantizer is a `Quant` node (domain `qonnx.custom_op.general`) carrying its
    /// scale, zero point, bit width and rounding, so sub-4-bit, per-layer mixed precision is
    /// explicit for a compiler (FINN and other QONNX consumers).
    Qonnx,
    /// Standard ONNX operators only: activation quantizers as Div/Add/Clip/Round/Sub/Mul,
    /// weights stored as their quantized float values, so any ONNX runtime runs it.
    Onnx,
}

impl Format {
    /// The name used on the command line and in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            Format::Qonnx => "qonnx",
            Format::Onnx => "onnx",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qonnx" => Ok(Format::Qonnx),
            "onnx" => Ok(Format::Onnx),
            _ => Err(format!("unknown export format `{s}`: expected qonnx or onnx")),
        }
    }
}
