//! BitOps, the complexity of EdMIPS (decisions.md R5).
//!
//! * Relaxed, per layer: `size_product · E[abits] · E[wbits]` (f32, in that order).
//! * Network: the layer costs summed in declaration order, divided by the **first** searchable
//!   layer's `size_product` (D3; this is why `--cd` differs so much per network).
//! * Discrete: BitOps `Σ sp·a·w` (M·bit²), bita `Σ memory_size·a` (K·bit), bitw
//!   `Σ param_size·w` (M·bit), and the README's normalised bit `sqrt(BitOps / Σ sp)`.
//!
//! `size_product` uses the input size / stride² (D2), as [`LayerInfo`] computes it.
//!
//! **Full-precision layers** (`fixed_layers`): EdMIPS counts only the searchable layers
//! (`"skip"`, the default, the reference's figures). HAWQ-V3's convention counts the stem and
//! the classifier at 8-bit weights and activations (`"int8"`): the summary then adds
//! `fixed_bitops` (`Σ sp·64` over those layers) and `total_bitops` (searchable plus fixed; for
//! ResNet-18 at W4A4 about 34,800 MBitOps, i.e. ~34 GBitOps). The normalised bit and the
//! differentiable cost stay over the searchable layers (the fixed layers are a constant the
//! search cannot change).

use edmips_core::candle::Tensor;
use edmips_core::{
    parse_params, BitDistribution, ComplexityCost, CostSummary, LayerBits, LayerInfo, Metric, Result, Table,
};
use serde::{Deserialize, Serialize};

/// The registry id.
pub const ID: &str = "bitops";

/// How the full-precision layers (stem, classifier) enter the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FixedLayers {
    /// Not counted (EdMIPS).
    #[default]
    Skip,
    /// Counted at 8-bit weights and activations (HAWQ-V3).
    Int8,
}

edmips_core::plugin_params! {
    /// The typed parameters of [`BitOps`].
    pub struct BitOpsParams {
        /// How the full-precision stem and classifier count: "skip" (EdMIPS) or "int8" (HAWQ-V3: W8A8, in total_bitops).
        pub fixed_layers: FixedLayers = FixedLayers::Skip,
    }
}

/// The BitOps cost. `BitOps::default()` is the EdMIPS cost.
#[derive(Debug, Clone, Default)]
pub struct BitOps {
    /// Parameters.
    pub params: BitOpsParams,
    /// The network's full-precision layers ([`ComplexityCost::set_fixed_layers`]).
    pub fixed: Vec<LayerInfo>,
}

/// Discrete totals of an allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BitOpsTotals {
    /// `Σ sp·a·w`, M·bit².
    pub bitops: f64,
    /// `Σ memory_size·a`, K·bit.
    pub bita: f64,
    /// `Σ param_size·w`, M·bit.
    pub bitw: f64,
    /// `Σ sp`, M.
    pub size_product: f64,
    /// `Σ memory_size`, K.
    pub memory_size: f64,
    /// `Σ param_size`, M.
    pub param_size: f64,
}

impl BitOpsTotals {
    /// `sqrt(bitops / Σ sp)`: 2.0 for uniform w2a2.
    pub fn normalized_bit(&self) -> f64 {
        (self.bitops / self.size_product).sqrt()
    }
}

impl BitOps {
    /// The totals of an allocation, summed in layer order.
    pub fn totals(layers: &[LayerInfo], bits: &[LayerBits]) -> BitOpsTotals {
        let mut t =
            BitOpsTotals { bitops: 0.0, bita: 0.0, bitw: 0.0, size_product: 0.0, memory_size: 0.0, param_size: 0.0 };
        for (l, b) in layers.iter().zip(bits) {
            let sp = l.size_product() as f64;
            let mem = l.memory_size() as f64;
            t.bitops += sp * b.abit * b.wbit;
            t.bita += mem * b.abit;
            t.bitw += l.param_size() * b.wbit;
            t.size_product += sp;
            t.memory_size += mem;
            t.param_size += l.param_size();
        }
        t
    }
}

impl ComplexityCost for BitOps {
    fn id(&self) -> &str {
        ID
    }

    fn set_fixed_layers(&mut self, fixed: &[LayerInfo]) {
        self.fixed = fixed.to_vec();
    }

    fn layer_cost(&self, layer: &LayerInfo, act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        let ea = act.expected()?;
        let ew = weight.expected()?;
        Ok(ea.affine(layer.size_product() as f64, 0.0)?.mul(&ew)?)
    }

    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        layers.first().map(|l| l.size_product() as f64).unwrap_or(1.0)
    }

    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        layer.size_product() as f64 * bits.abit * bits.wbit
    }

    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let t = Self::totals(layers, bits);
        let mut summary = CostSummary {
            headline: Metric::new("bit", t.normalized_bit(), "bit"),
            metrics: vec![
                Metric::new("bitops", t.bitops, "MBitOps"),
                Metric::new("bit", t.normalized_bit(), "bit"),
                Metric::new("bita", t.bita, "Kbit"),
                Metric::new("bitw", t.bitw, "Mbit"),
                Metric::new("mean_abit", t.bita / t.memory_size, "bit"),
                Metric::new("mean_wbit", t.bitw / t.param_size, "bit"),
                Metric::new("size_product", t.size_product, "M"),
            ],
        };
        if self.params.fixed_layers == FixedLayers::Int8 {
            let fixed: f64 = self.fixed.iter().map(|l| l.size_product() as f64 * 64.0).sum();
            summary.metrics.push(Metric::new("fixed_bitops", fixed, "MBitOps"));
            summary.metrics.push(Metric::new("total_bitops", t.bitops + fixed, "MBitOps"));
        }
        summary
    }
}

fn build(params: &Table) -> Result<Box<dyn ComplexityCost>> {
    let params: BitOpsParams = parse_params(ID, params)?;
    Ok(Box::new(BitOps { params, fixed: Vec::new() }))
}

edmips_core::register_cost! {
    id: ID,
    summary: "EdMIPS BitOps: size_product x E[abit] x E[wbit], normalised by the first layer; bit = sqrt(BitOps/sum sp); stem/classifier skipped or int8",
    params: BitOpsParams,
    build: build,
}
