//! Model size: the weight memory of the searchable layers in bits, the figure that decides
//! whether a network fits an accelerator's on-chip memory.
//!
//! * Relaxed, per layer: `param_size · E[wbit]` (Mbit; `param_size = C_in·C_out·kh·kw / 1e6`).
//! * Network: the layer costs summed, divided by the same sum at `normalise_bits` bits per
//!   weight (32 by default), so the complexity term is the fraction of the full-precision model
//!   and `--cd` means the same for any backbone.
//! * Discrete: `param_size · wbit` per layer; the summary reports the total (`size_mbit`, the
//!   headline), the same in kilobytes (`size_kbyte`), the compression against 32-bit weights
//!   and the mean weight bits.
//!
//! Activation bits do not enter this cost, and neither do the full-precision stem and
//! classifier (the searchable layers' weights are what the search changes).

use edmips_core::candle::Tensor;
use edmips_core::{
    parse_params, BitDistribution, ComplexityCost, CostSummary, Error, LayerBits, LayerInfo, Metric, Result, Table,
};

/// The registry id.
pub const ID: &str = "size";

edmips_core::plugin_params! {
    /// Model size; also its typed parameters.
    pub struct Size {
        /// Bits per weight of the reference model the cost is normalised by.
        pub normalise_bits: f64 = 32.0,
    }
}

impl ComplexityCost for Size {
    fn id(&self) -> &str {
        ID
    }

    fn layer_cost(&self, layer: &LayerInfo, _act: &BitDistribution, weight: &BitDistribution) -> Result<Tensor> {
        Ok(weight.expected()?.affine(layer.param_size(), 0.0)?)
    }

    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        layers.iter().map(LayerInfo::param_size).sum::<f64>() * self.normalise_bits
    }

    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        layer.param_size() * bits.wbit
    }

    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let mbit: f64 = layers.iter().zip(bits).map(|(l, b)| self.discrete_cost(l, *b)).sum();
        let params: f64 = layers.iter().map(LayerInfo::param_size).sum();
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
        CostSummary {
            headline: Metric::new("size_mbit", mbit, "Mbit"),
            metrics: vec![
                Metric::new("size_mbit", mbit, "Mbit"),
                Metric::new("size_kbyte", mbit * 1e3 / 8.0, "KB"),
                Metric::new("compression", ratio(params * 32.0, mbit), "x"),
                Metric::new("mean_wbit", ratio(mbit, params), "bit"),
            ],
        }
    }
}

fn build(params: &Table) -> Result<Box<dyn ComplexityCost>> {
    let p: Size = parse_params(ID, params)?;
    if !(p.normalise_bits.is_finite() && p.normalise_bits > 0.0) {
        return Err(Error::config(
            ID,
            "normalise_bits",
            format!("must be a positive number, got {}", p.normalise_bits),
        ));
    }
    Ok(Box::new(p))
}

edmips_core::register_cost! {
    id: ID,
    summary: "Model size: weight bits of the searchable layers (Mbit), normalised by the 32-bit model",
    params: Size,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::Device;
    use edmips_core::LayerKind;

    fn conv(index: usize, cin: usize, cout: usize, k: usize) -> LayerInfo {
        LayerInfo {
            index,
            name: format!("l{index}"),
            kind: LayerKind::Conv2d,
            in_channels: cin,
            out_channels: cout,
            kernel: (k, k),
            stride: (1, 1),
            padding: [1; 4],
            input_hw: (8, 8),
            output_hw: (8, 8),
        }
    }

    #[test]
    fn counts_weight_bits_and_normalises_by_the_full_precision_model() {
        let layers = [conv(0, 16, 16, 3), conv(1, 16, 32, 1)];
        let c = Size::default();
        let s = c.summarize(&layers, &[LayerBits { wbit: 2.0, abit: 8.0 }, LayerBits { wbit: 4.0, abit: 2.0 }]);
        let want = 2304.0 * 2.0 + 512.0 * 4.0;
        assert!((s.headline.value - want * 1e-6).abs() < 1e-12, "{s:?}");
        assert!((s.get("size_kbyte").unwrap() - want / 8.0 / 1e3).abs() < 1e-9);
        assert!((s.get("compression").unwrap() - 2816.0 * 32.0 / want).abs() < 1e-9);
        assert!((c.normalizer(&layers) - 2816.0 * 32.0 * 1e-6).abs() < 1e-12);
        let dist = |bits: Vec<u32>, p: &[f32]| BitDistribution { bits, probs: Tensor::new(p, &Device::Cpu).unwrap() };
        let (a, w) = (dist(vec![2, 4], &[0.5, 0.5]), dist(vec![1, 3], &[0.25, 0.75]));
        let got = c.layer_cost(&layers[0], &a, &w).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - 2304e-6 * 2.5).abs() < 1e-9, "{got}");
        let bad: Table = toml::from_str("normalise_bits = 0.0").unwrap();
        assert!(build(&bad).unwrap_err().to_string().contains("normalise_bits"));
    }
}
