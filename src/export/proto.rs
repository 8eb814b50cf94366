//! A minimal protocol-buffers encoder: the wire format (varints, fixed 32-bit floats and
//! length-delimited fields) that the ONNX messages of [`super::model`] are written with.
//!
//! Only what ONNX needs is here: every field is written with its key `(field << 3) | wire
//! type`; integers (`int32`, `int64`, enums) as varints, negatives sign-extended to ten bytes as
//! protobuf does; `float` as four little-endian bytes (wire type 5); strings, bytes and
//! embedded messages length-delimited (wire type 2). Repeated scalars are written unpacked, one
//! key per value (proto2 declares `TensorProto.dims` and `AttributeProto.ints` unpacked, and
//! parsers accept both forms). Nothing here decodes: the independent checks read the files with
//! the `onnx` Python package (`tests/export_onnx.rs`).

/// Wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint = 0,
    Len = 2,
    Fixed32 = 5,
}

/// A message being encoded: fields are appended in the order they are written.
#[derive(Debug, Default, Clone)]
pub struct ProtoWriter {
    buf: Vec<u8>,
}

impl ProtoWriter {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes encoded so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: Wire) {
        self.varint(((field as u64) << 3) | wire as u64);
    }

    /// An `int64` (or `int32`, or enum) field; negatives take ten bytes.
    pub fn int64(&mut self, field: u32, v: i64) {
        self.key(field, Wire::Varint);
        self.varint(v as u64);
    }

    /// A `float` field.
    pub fn float(&mut self, field: u32, v: f32) {
        self.key(field, Wire::Fixed32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, Wire::Len);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A `string` field (UTF-8).
    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// An embedded message.
    pub fn message(&mut self, field: u32, m: &ProtoWriter) {
        self.bytes(field, &m.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut w = ProtoWriter::new();
        w.varint(v);
        w.into_bytes()
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]); // the protobuf documentation's example
        assert_eq!(varint(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn fields_carry_their_key_and_wire_type() {
        let mut w = ProtoWriter::new();
        w.int64(1, 150); // the documentation's `08 96 01`
        w.string(2, "testing"); // `12 07 74 65 73 74 69 6e 67`
        w.float(2, 1.0);
        w.int64(3, -1);
        let mut inner = ProtoWriter::new();
        inner.int64(1, 150);
        w.message(3, &inner);
        w.int64(16, 1); // field numbers above 15 take a two-byte key
        let mut want = vec![0x08, 0x96, 0x01, 0x12, 0x07];
        want.extend_from_slice(b"testing");
        want.extend_from_slice(&[0x15, 0x00, 0x00, 0x80, 0x3f]);
        want.extend_from_slice(&[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        want.extend_from_slice(&[0x1a, 0x03, 0x08, 0x96, 0x01]);
        want.extend_from_slice(&[0x80, 0x01, 0x01]);
        assert_eq!(w.as_bytes(), &want[..]);
    }
}
