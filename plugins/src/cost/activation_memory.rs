//! Activation memory: the bits of every searchable layer's input feature map, the memory a
//! quantized accelerator moves per sample (the reference's `bita` total, as a cost of its own).
//!
//! * Relaxed, per layer: `memory_size · E[abit]` (Kbit; `memory_size = C_in·H_in·W_in / 1e3`).
//! * Network: the layer costs summed, divided by the same sum at `normalise_bits` bits per
//!   activation (8 by default), so the complexity term is the fraction of an 8-bit network's
//!   activation memory and `--cd` means the same for any backbone.
//! * Discrete: `memory_size · abit` per layer; the summary reports the sum (`activation_kbit`,
//!   the headline), the largest single layer (`peak_kbit`, the buffer an accelerator must
//!   hold) and the mean activation bits.
//!
//! Weight bits do not enter this cost.

use edmips_core::candle::Tensor;
use edmips_core::{
    parse_params, BitDistribution, ComplexityCost, CostSummary, Error, LayerBits, LayerInfo, Metric, Result, Table,
};

/// The registry id.
pub const ID: &str = "activation_memory";

edmips_core::plugin_params! {
    /// Activation memory; also its typed parameters.
    pub struct ActivationMemory {
        /// Bits per activation of the reference network the cost is normalised by.
        pub normalise_bits: f64 = 8.0,
    }
}

impl ComplexityCost for ActivationMemory {
    fn id(&self) -> &str {
        ID
    }

    fn layer_cost(&self, layer: &LayerInfo, act: &BitDistribution, _weight: &BitDistribution) -> Result<Tensor> {
        Ok(act.expected()?.affine(layer.memory_size() as f64, 0.0)?)
    }

    fn normalizer(&self, layers: &[LayerInfo]) -> f64 {
        layers.iter().map(|l| l.memory_size() as f64).sum::<f64>() * self.normalise_bits
    }

    fn discrete_cost(&self, layer: &LayerInfo, bits: LayerBits) -> f64 {
        layer.memory_size() as f64 * bits.abit
    }

    fn summarize(&self, layers: &[LayerInfo], bits: &[LayerBits]) -> CostSummary {
        let per: Vec<f64> = layers.iter().zip(bits).map(|(l, b)| self.discrete_cost(l, *b)).collect();
        let total: f64 = per.iter().sum();
        let peak = per.iter().cloned().fold(0.0, f64::max);
        let mem: f64 = layers.iter().map(|l| l.memory_size() as f64).sum();
        CostSummary {
            headline: Metric::new("activation_kbit", total, "Kbit"),
            metrics: vec![
                Metric::new("activation_kbit", total, "Kbit"),
                Metric::new("peak_kbit", peak, "Kbit"),
                Metric::new("mean_abit", if mem > 0.0 { total / mem } else { 0.0 }, "bit"),
            ],
        }
    }
}

fn build(params: &Table) -> Result<Box<dyn ComplexityCost>> {
    let p: ActivationMemory = parse_params(ID, params)?;
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
    summary: "Activation memory: input feature-map bits per layer (Kbit), sum and peak; normalised by the 8-bit network",
    params: ActivationMemory,
    build: build,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edmips_core::candle::{Device, Var};
    use edmips_core::LayerKind;

    fn layer(index: usize, cin: usize, hw: usize) -> LayerInfo {
        LayerInfo {
            index,
            name: format!("l{index}"),
            kind: LayerKind::Conv2d,
            in_channels: cin,
            out_channels: 8,
            kernel: (3, 3),
            stride: (1, 1),
            padding: [1; 4],
            input_hw: (hw, hw),
            output_hw: (hw, hw),
        }
    }

    #[test]
    fn relaxed_and_discrete_costs_match_a_float64_reference() {
        let c = ActivationMemory::default();
        let layers = [layer(0, 16, 32), layer(1, 32, 16)];
        let p = Var::new(&[0.2f32, 0.3, 0.5], &Device::Cpu).unwrap();
        let a = BitDistribution { bits: vec![2, 3, 4], probs: p.as_tensor().clone() };
        let w = BitDistribution { bits: vec![1], probs: Tensor::new(&[1f32], &Device::Cpu).unwrap() };
        let loss = c.complexity(&layers, &[(a.clone(), w.clone()), (a, w)]).unwrap();
        let ea = 0.2 * 2.0 + 0.3 * 3.0 + 0.5 * 4.0;
        let mem = [16.0 * 32.0 * 32.0 / 1e3, 32.0 * 16.0 * 16.0 / 1e3];
        let want = (mem[0] + mem[1]) * ea / ((mem[0] + mem[1]) * 8.0);
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6);
        // d loss / d p_i = bits_i · Σmem / (8 Σmem) = bits_i / 8.
        let g = loss.backward().unwrap().get(p.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (gi, b) in g.iter().zip([2.0, 3.0, 4.0]) {
            assert!((*gi as f64 - b / 8.0).abs() < 1e-6, "{gi} vs {}", b / 8.0);
        }
        let s = c.summarize(&layers, &[LayerBits { wbit: 1.0, abit: 2.0 }, LayerBits { wbit: 1.0, abit: 4.0 }]);
        let (sum, peak) = (mem[0] * 2.0 + mem[1] * 4.0, (mem[0] * 2.0f64).max(mem[1] * 4.0));
        assert!((s.get("activation_kbit").unwrap() - sum).abs() < 1e-3);
        assert!((s.get("peak_kbit").unwrap() - peak).abs() < 1e-3);
        assert!((s.get("mean_abit").unwrap() - sum / (mem[0] + mem[1])).abs() < 1e-6);
    }

    #[test]
    fn a_bad_normaliser_is_named() {
        let t: Table = toml::from_str("normalise_bits = 0").unwrap();
        let e = build(&t).unwrap_err().to_string();
        assert!(e.contains("normalise_bits"), "{e}");
    }
}
