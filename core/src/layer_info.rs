//! [`LayerInfo`]: the static description of one quantizable layer, recorded by the network
//! builder as layers are declared (shape inference), in declaration order.
//!
//! The sizes follow the EdMIPS reference exactly (decisions.md R5, D2):
//! `size_product` uses the **input** spatial size divided by stride², not the output size, and
//! is rounded to f32 as the reference's buffers are. [`LayerInfo::macs`] gives the true MAC
//! count separately.

use serde::{Deserialize, Serialize};

/// Kind of a layer. EdMIPS quantizes convolutions only (the stem and the classifier stay full
/// precision, and are described by [`Graph::fixed_layers`](crate::graph::Graph::fixed_layers)
/// for costs that count them); the enum leaves room for other kinds a backbone may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A 2-D convolution.
    Conv2d,
    /// A fully connected layer (the classifier), described as a 1×1 convolution on a 1×1
    /// map: `in_channels` input features, `out_channels` outputs.
    Linear,
}

/// Static description of one quantizable layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Position among the searchable layers (declaration order).
    pub index: usize,
    /// Dotted name, e.g. `layer1.0.conv1`.
    pub name: String,
    /// Layer kind.
    pub kind: LayerKind,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel (height, width).
    pub kernel: (usize, usize),
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Zero padding (top, bottom, left, right).
    pub padding: [usize; 4],
    /// Input spatial size (height, width).
    pub input_hw: (usize, usize),
    /// Output spatial size (height, width).
    pub output_hw: (usize, usize),
}

impl LayerInfo {
    /// Output size of a convolution along one axis, or `None` if the kernel does not fit.
    pub fn conv_out(input: usize, kernel: usize, stride: usize, pad_lo: usize, pad_hi: usize) -> Option<usize> {
        let padded = input + pad_lo + pad_hi;
        if padded < kernel || stride == 0 {
            return None;
        }
        Some((padded - kernel) / stride + 1)
    }

    /// `C_in·C_out·kh·kw·1e-6` (millions of parameters), as the reference's Python double.
    pub fn param_size(&self) -> f64 {
        (self.in_channels * self.out_channels * self.kernel.0 * self.kernel.1) as f64 * 1e-6
    }

    /// `param_size / stride²` (the reference's `filter_size`).
    pub fn filter_size(&self) -> f64 {
        self.param_size() / (self.stride.0 * self.stride.1) as f64
    }

    /// `filter_size · H_in · W_in` in millions, rounded to f32 as the reference's buffer.
    pub fn size_product(&self) -> f32 {
        self.size_product_f64() as f32
    }

    /// [`size_product`](Self::size_product) before the f32 rounding.
    pub fn size_product_f64(&self) -> f64 {
        self.filter_size() * self.input_hw.1 as f64 * self.input_hw.0 as f64
    }

    /// `C_in · H_in · W_in · 1e-3` in thousands, rounded to f32 as the reference's buffer.
    pub fn memory_size(&self) -> f32 {
        (self.in_channels as f64 * self.input_hw.0 as f64 * self.input_hw.1 as f64 * 1e-3) as f32
    }

    /// The true multiply-accumulate count of one sample (not millions): output size times
    /// `C_in·C_out·kh·kw`. Differs from `size_product·1e6` for unpadded convolutions (D2).
    pub fn macs(&self) -> u64 {
        (self.output_hw.0 * self.output_hw.1 * self.in_channels * self.out_channels * self.kernel.0 * self.kernel.1)
            as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(cin: usize, cout: usize, k: usize, s: usize, hw: usize) -> LayerInfo {
        LayerInfo {
            index: 0,
            name: "l".into(),
            kind: LayerKind::Conv2d,
            in_channels: cin,
            out_channels: cout,
            kernel: (k, k),
            stride: (s, s),
            padding: [k / 2; 4],
            input_hw: (hw, hw),
            output_hw: (hw / s, hw / s),
        }
    }

    #[test]
    // The literal is the reference value as printed; it rounds to the f32 the test compares.
    #[allow(clippy::excessive_precision)]
    fn resnet18_first_layer_sizes_match_the_reference_buffers() {
        let l = conv(64, 64, 3, 1, 56);
        assert_eq!(l.size_product(), 115.605_506_896_972_66_f32);
        assert_eq!(l.memory_size(), 200.704_f32);
        assert_eq!(l.param_size(), 0.036864);
        let d = conv(64, 128, 1, 2, 56);
        assert_eq!(d.size_product(), 6.422528_f32);
    }

    #[test]
    fn conv_out_handles_valid_and_padded() {
        assert_eq!(LayerInfo::conv_out(299, 3, 2, 0, 0), Some(149));
        assert_eq!(LayerInfo::conv_out(17, 7, 1, 3, 3), Some(17));
        assert_eq!(LayerInfo::conv_out(2, 3, 1, 0, 0), None);
    }
}
