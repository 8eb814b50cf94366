//! The architecture report printed after every search epoch and written to `arch.json`: per
//! layer the mixing probabilities, the argmax bits and their BitOps (and the learnable
//! quantizer parameters, when the quantizers have any); totals for the argmax and the expected
//! architecture. `edmips train --ac arch.json` reads the argmax bits back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::budget::Repair;
use edmips_core::error::Result;
use edmips_core::graph::Network;
use edmips_core::traits::{ComplexityCost, CostSummary, LayerBits, RelaxContext};

/// One layer of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Position among the searchable layers.
    pub index: usize,
    /// Layer name.
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel (h, w).
    pub kernel: (usize, usize),
    /// Stride (h, w).
    pub stride: (usize, usize),
    /// Input size (h, w).
    pub input_hw: (usize, usize),
    /// `size_product` (M).
    pub size_product: f32,
    /// Chosen weight bits (argmax, or fixed).
    pub wbit: u32,
    /// Chosen activation bits.
    pub abit: u32,
    /// Cost of the chosen bits (BitOps for `bitops`).
    pub cost: f64,
    /// Activation-bit candidates (search only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abits: Vec<u32>,
    /// Weight-bit candidates (search only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wbits: Vec<u32>,
    /// Activation mixing probabilities (search only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probs_activ: Vec<f32>,
    /// Weight mixing probabilities (search only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probs_weight: Vec<f32>,
    /// Expected activation bits (search only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_abit: Option<f64>,
    /// Expected weight bits (search only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_wbit: Option<f64>,
    /// The learnable quantizer parameters of the layer (LSQ steps, PACT clips), by name
    /// without the layer prefix (`act_quant.step.b2`); empty for parameter-free quantizers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub learned: BTreeMap<String, Vec<f32>>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchReport {
    /// The named configuration the report belongs to.
    pub config: String,
    /// Epochs completed when the report was made.
    pub epoch: usize,
    /// Per layer, in declaration order.
    pub layers: Vec<LayerReport>,
    /// Totals of the chosen (argmax or fixed) bits.
    pub argmax: CostSummary,
    /// Totals of the expected bits (search only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<CostSummary>,
    /// What the budget repair changed in the chosen bits (a search with a target, last epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl ArchReport {
    /// Builds the report of `net` under `cost`.
    pub fn new(config: &str, epoch: usize, net: &Network, cost: &dyn ComplexityCost) -> Result<Self> {
        let chosen = net.chosen_bits()?;
        let infos = net.searchable_layers();
        let dists = match net.mode() {
            edmips_core::graph::LayerMode::Search { .. } => net.distributions(&RelaxContext::default())?,
            _ => vec![],
        };
        let learned = net.learned_values()?;
        let mut layers = Vec::with_capacity(infos.len());
        let mut expected = Vec::new();
        for (i, (info, &(wbit, abit))) in infos.iter().zip(&chosen).enumerate() {
            let bits = LayerBits { wbit: wbit as f64, abit: abit as f64 };
            let mut r = LayerReport {
                index: info.index,
                name: info.name.clone(),
                in_channels: info.in_channels,
                out_channels: info.out_channels,
                kernel: info.kernel,
                stride: info.stride,
                input_hw: info.input_hw,
                size_product: info.size_product(),
                wbit,
                abit,
                cost: cost.discrete_cost(info, bits),
                abits: vec![],
                wbits: vec![],
                probs_activ: vec![],
                probs_weight: vec![],
                expected_abit: None,
                expected_wbit: None,
                learned: learned
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|(name, v)| {
                        let short = name.strip_prefix(&format!("{}.", info.name)).unwrap_or(name);
                        (short.to_string(), v.clone())
                    })
                    .collect(),
            };
            if let Some((a, w)) = dists.get(i) {
                r.probs_activ = a.probs.to_vec1()?;
                r.probs_weight = w.probs.to_vec1()?;
                r.abits = a.bits.clone();
                r.wbits = w.bits.clone();
                let ea: f64 = a.bits.iter().zip(&r.probs_activ).map(|(b, p)| *b as f64 * *p as f64).sum();
                let ew: f64 = w.bits.iter().zip(&r.probs_weight).map(|(b, p)| *b as f64 * *p as f64).sum();
                r.expected_abit = Some(ea);
                r.expected_wbit = Some(ew);
                expected.push(LayerBits { wbit: ew, abit: ea });
            }
            layers.push(r);
        }
        let bits: Vec<LayerBits> = chosen.iter().map(|&(w, a)| LayerBits { wbit: w as f64, abit: a as f64 }).collect();
        let argmax = cost.summarize(infos, &bits);
        let expected = (!expected.is_empty()).then(|| cost.summarize(infos, &expected));
        Ok(ArchReport { config: config.to_string(), epoch, layers, argmax, expected, repair: None })
    }

    /// The chosen `(wbit, abit)` per layer.
    pub fn bits(&self) -> Vec<(u32, u32)> {
        self.layers.iter().map(|l| (l.wbit, l.abit)).collect()
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let search = self.layers.iter().any(|l| !l.probs_activ.is_empty());
        let w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(4).max(5);
        if search {
            s += &format!(
                "{:>3}  {:w$}  {:>22}  {:>29}  {:>4} {:>4}  {:>10}\n",
                "#", "layer", "p(abit)", "p(wbit)", "abit", "wbit", "cost"
            );
        } else {
            s += &format!("{:>3}  {:w$}  {:>4} {:>4}  {:>10}\n", "#", "layer", "abit", "wbit", "cost");
        }
        for l in &self.layers {
            if search {
                let fmt = |bits: &[u32], p: &[f32]| {
                    bits.iter().zip(p).map(|(b, p)| format!("{b}:{p:.2}")).collect::<Vec<_>>().join(" ")
                };
                s += &format!(
                    "{:>3}  {:w$}  {:>22}  {:>29}  {:>4} {:>4}  {:>10.3}\n",
                    l.index,
                    l.name,
                    fmt(&l.abits, &l.probs_activ),
                    fmt(&l.wbits, &l.probs_weight),
                    l.abit,
                    l.wbit,
                    l.cost
                );
            } else {
                s += &format!("{:>3}  {:w$}  {:>4} {:>4}  {:>10.3}\n", l.index, l.name, l.abit, l.wbit, l.cost);
            }
        }
        let line = |label: &str, c: &CostSummary| {
            let m: Vec<String> = c.metrics.iter().map(|m| format!("{} {:.4} {}", m.name, m.value, m.unit)).collect();
            format!("{label}: {}\n", m.join(", "))
        };
        let chosen = match (&self.repair, search) {
            (Some(_), _) => "chosen (repaired)",
            (None, true) => "argmax",
            (None, false) => "fixed",
        };
        if self.layers.iter().any(|l| !l.learned.is_empty()) {
            s += "learned quantizer parameters:\n";
            for l in self.layers.iter().filter(|l| !l.learned.is_empty()) {
                let v: Vec<String> = l
                    .learned
                    .iter()
                    .map(|(k, v)| match v.as_slice() {
                        [x] => format!("{k}={x:.4}"),
                        v => format!("{k}=[{} values]", v.len()),
                    })
                    .collect();
                s += &format!("{:>3}  {:w$}  {}\n", l.index, l.name, v.join(" "));
            }
        }
        s += &line(chosen, &self.argmax);
        if let Some(e) = &self.expected {
            s += &line("expected", e);
        }
        if let Some(r) = &self.repair {
            let moves: Vec<String> = r
                .changes
                .iter()
                .map(|c| format!("{} w{}a{} -> w{}a{}", c.name, c.from.0, c.from.1, c.to.0, c.to.1))
                .collect();
            s += &format!(
                "budget repair: {} {:.4} -> {:.4} (target {}), {} layer change(s): {}\n",
                r.metric,
                r.before,
                r.after,
                r.target,
                r.changes.len(),
                if moves.is_empty() { "none".to_string() } else { moves.join(", ") }
            );
        }
        s
    }
}
