//! The subset of ONNX that edmips writes, as plain Rust values, and its protobuf encoding with
//! the field numbers of the public `onnx.proto`:
//!
//! | message | fields written (number) |
//! |---|---|
//! | `ModelProto` | ir_version (1), producer_name (2), producer_version (3), doc_string (6), graph (7), opset_import (8), metadata_props (14) |
//! | `OperatorSetIdProto` | domain (1), version (2) |
//! | `StringStringEntryProto` | key (1), value (2) |
//! | `GraphProto` | node (1), name (2), initializer (5), input (11), output (12), value_info (13) |
//! | `NodeProto` | input (1), output (2), name (3), op_type (4), attribute (5), domain (7) |
//! | `AttributeProto` | name (1), f (2), i (3), s (4), floats (7), ints (8), type (20) |
//! | `TensorProto` | dims (1), data_type (2), name (8), raw_data (9) |
//! | `ValueInfoProto` | name (1), type (2) |
//! | `TypeProto` | tensor_type (1); `TypeProto.Tensor`: elem_type (1), shape (2) |
//! | `TensorShapeProto` | dim (1); `Dimension`: dim_value (1), dim_param (2) |
//!
//! Tensor data goes in `raw_data`, little-endian, as ONNX specifies.

use super::proto::ProtoWriter;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;

/// `AttributeProto.AttributeType` values.
mod attr_type {
    pub const FLOAT: i64 = 1;
    pub const INT: i64 = 2;
    pub const STRING: i64 = 3;
    pub const FLOATS: i64 = 6;
    pub const INTS: i64 = 7;
}

/// A whole model file (`ModelProto`).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The IR version.
    pub ir_version: i64,
    /// `(domain, version)` of every operator set the graph uses (`""` is the ONNX domain).
    pub opsets: Vec<(String, i64)>,
    /// The producer's name.
    pub producer_name: String,
    /// The producer's version.
    pub producer_version: String,
    /// A free-text description.
    pub doc_string: String,
    /// The graph.
    pub graph: Graph,
    /// `metadata_props`, in order.
    pub metadata: Vec<(String, String)>,
}

/// A graph (`GraphProto`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    /// Its name.
    pub name: String,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Constant tensors.
    pub initializers: Vec<Tensor>,
    /// Graph inputs (not initializers).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Types of intermediate values.
    pub value_info: Vec<ValueInfo>,
}

/// One operator application (`NodeProto`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// Operator type (`Conv`, `Quant`, ...).
    pub op_type: String,
    /// Operator domain (`""` for ONNX).
    pub domain: String,
    /// Input value names.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes, in order.
    pub attributes: Vec<Attribute>,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `f`.
    Float(f32),
    /// `i`.
    Int(i64),
    /// `s`.
    String(String),
    /// `floats`.
    Floats(Vec<f32>),
    /// `ints`.
    Ints(Vec<i64>),
}

/// A named attribute (`AttributeProto`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The attribute's name.
    pub name: String,
    /// Its value.
    pub value: AttrValue,
}

impl Attribute {
    /// `name = value`.
    pub fn new(name: &str, value: AttrValue) -> Self {
        Attribute { name: name.to_string(), value }
    }
}

/// Tensor contents.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32 values.
    F32(Vec<f32>),
    /// int64 values.
    I64(Vec<i64>),
}

/// A constant tensor (`TensorProto`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its value name.
    pub name: String,
    /// Its shape (empty for a scalar).
    pub dims: Vec<i64>,
    /// Its values, row-major.
    pub data: TensorData,
}

/// One dimension of a value's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    /// A fixed size.
    Value(i64),
    /// A named, free size (the batch).
    Param(String),
}

/// A typed value (`ValueInfoProto` with a tensor type).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// The value's name.
    pub name: String,
    /// `TensorProto.DataType`.
    pub elem_type: i32,
    /// Its shape.
    pub dims: Vec<Dim>,
}

impl Model {
    /// The serialized `ModelProto`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = ProtoWriter::new();
        w.int64(1, self.ir_version);
        w.string(2, &self.producer_name);
        w.string(3, &self.producer_version);
        if !self.doc_string.is_empty() {
            w.string(6, &self.doc_string);
        }
        w.message(7, &self.graph.writer());
        for (domain, version) in &self.opsets {
            let mut o = ProtoWriter::new();
            o.string(1, domain);
            o.int64(2, *version);
            w.message(8, &o);
        }
        for (k, v) in &self.metadata {
            let mut e = ProtoWriter::new();
            e.string(1, k);
            e.string(2, v);
            w.message(14, &e);
        }
        w.into_bytes()
    }
}

impl Graph {
    fn writer(&self) -> ProtoWriter {
        let mut w = ProtoWriter::new();
        for n in &self.nodes {
            w.message(1, &n.writer());
        }
        w.string(2, &self.name);
        for t in &self.initializers {
            w.message(5, &t.writer());
        }
        for v in &self.inputs {
            w.message(11, &v.writer());
        }
        for v in &self.outputs {
            w.message(12, &v.writer());
        }
        for v in &self.value_info {
            w.message(13, &v.writer());
        }
        w
    }
}

impl Node {
    /// The encoded `NodeProto`.
    pub fn writer(&self) -> ProtoWriter {
        let mut w = ProtoWriter::new();
        for i in &self.inputs {
            w.string(1, i);
        }
        for o in &self.outputs {
            w.string(2, o);
        }
        w.string(3, &self.name);
        w.string(4, &self.op_type);
        for a in &self.attributes {
            w.message(5, &a.writer());
        }
        if !self.domain.is_empty() {
            w.string(7, &self.domain);
        }
        w
    }
}

impl Attribute {
    fn writer(&self) -> ProtoWriter {
        let mut w = ProtoWriter::new();
        w.string(1, &self.name);
        let ty = match &self.value {
            AttrValue::Float(f) => {
                w.float(2, *f);
                attr_type::FLOAT
            }
            AttrValue::Int(i) => {
                w.int64(3, *i);
                attr_type::INT
            }
            AttrValue::String(s) => {
                w.string(4, s);
                attr_type::STRING
            }
            AttrValue::Floats(fs) => {
                for f in fs {
                    w.float(7, *f);
                }
                attr_type::FLOATS
            }
            AttrValue::Ints(is) => {
                for i in is {
                    w.int64(8, *i);
                }
                attr_type::INTS
            }
        };
        w.int64(20, ty);
        w
    }
}

impl Tensor {
    /// A float32 tensor.
    pub fn f32(name: impl Into<String>, dims: Vec<i64>, values: Vec<f32>) -> Self {
        Tensor { name: name.into(), dims, data: TensorData::F32(values) }
    }

    /// An int64 tensor.
    pub fn i64(name: impl Into<String>, dims: Vec<i64>, values: Vec<i64>) -> Self {
        Tensor { name: name.into(), dims, data: TensorData::I64(values) }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn writer(&self) -> ProtoWriter {
        let mut w = ProtoWriter::new();
        for d in &self.dims {
            w.int64(1, *d);
        }
        let (ty, raw): (i32, Vec<u8>) = match &self.data {
            TensorData::F32(v) => (FLOAT, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I64(v) => (INT64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        w.int64(2, ty as i64);
        w.string(8, &self.name);
        w.bytes(9, &raw);
        w
    }
}

impl ValueInfo {
    /// A float32 value of this shape.
    pub fn f32(name: impl Into<String>, dims: Vec<Dim>) -> Self {
        ValueInfo { name: name.into(), elem_type: FLOAT, dims }
    }

    fn writer(&self) -> ProtoWriter {
        let mut shape = ProtoWriter::new();
        for d in &self.dims {
            let mut dim = ProtoWriter::new();
            match d {
                Dim::Value(v) => dim.int64(1, *v),
                Dim::Param(p) => dim.string(2, p),
            }
            shape.message(1, &dim);
        }
        let mut tensor = ProtoWriter::new();
        tensor.int64(1, self.elem_type as i64);
        tensor.message(2, &shape);
        let mut ty = ProtoWriter::new();
        ty.message(1, &tensor);
        let mut w = ProtoWriter::new();
        w.string(1, &self.name);
        w.message(2, &ty);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_encodes_inputs_outputs_name_type_attributes_and_domain() {
        let n = Node {
            name: "q".into(),
            op_type: "Quant".into(),
            domain: "d".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            attributes: vec![Attribute::new("signed", AttrValue::Int(0))],
        };
        // input (1) "x", output (2) "y", name (3) "q", op_type (4) "Quant",
        // attribute (5) { name (1) "signed", i (3) 0, type (20) INT = 2 }, domain (7) "d".
        let mut want = vec![0x0a, 1, b'x', 0x12, 1, b'y', 0x1a, 1, b'q', 0x22, 5];
        want.extend_from_slice(b"Quant");
        want.extend_from_slice(&[0x2a, 13, 0x0a, 6]);
        want.extend_from_slice(b"signed");
        want.extend_from_slice(&[0x18, 0x00, 0xa0, 0x01, 0x02, 0x3a, 1, b'd']);
        assert_eq!(n.writer().as_bytes(), &want[..]);
    }

    #[test]
    fn a_tensor_has_dims_type_name_and_little_endian_raw_data() {
        let t = Tensor::f32("w", vec![2], vec![1.0, -2.0]);
        let want = [
            0x08, 2, // dims
            0x10, 1, // data_type FLOAT
            0x42, 1, b'w', // name
            0x4a, 8, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, // raw_data
        ];
        assert_eq!(t.writer().as_bytes(), &want[..]);
    }

    #[test]
    fn a_value_info_nests_type_tensor_type_and_shape() {
        let v = ValueInfo::f32("x", vec![Dim::Param("N".into()), Dim::Value(3)]);
        let want = [
            0x0a, 1, b'x', // name
            0x12, 15, // type
            0x0a, 13, // tensor_type
            0x08, 1, // elem_type FLOAT
            0x12, 9, // shape
            0x0a, 3, 0x12, 1, b'N', // dim { dim_param "N" }
            0x0a, 2, 0x08, 3, // dim { dim_value 3 }
        ];
        assert_eq!(v.writer().as_bytes(), &want[..]);
    }
}
