//! [`ModelConfig`]: which backbone, which plugins, and how the quantizable layers are set up
//! (search, fixed bits, or full precision). Named configurations (`mixres18_w1234a234`, ...)
//! are registered `ModelConfig`s; a TOML file or `--set` overrides can change any field.

use serde::{Deserialize, Serialize};

use crate::plugin_params::PluginSpec;

/// Per-layer bits of a fixed-precision (retrain) network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum FixedBits {
    /// Every quantizable layer at the same bits (`quant*_2w2a`).
    Uniform {
        /// Weight bits.
        wbit: u32,
        /// Activation bits.
        abit: u32,
    },
    /// Read from an architecture file given with `--ac` (`quant*_cfg`).
    ArchFile,
    /// An explicit list of `[wbit, abit]` per layer, in declaration order (`quant*_pretrained_cfg`).
    List {
        /// One `[wbit, abit]` per quantizable layer.
        layers: Vec<[u32; 2]>,
    },
}

/// How the quantizable layers are built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuantMode {
    /// Mixed-precision search over these candidate bits (EdMIPS: w 1..4, a 2..4).
    Search {
        /// Weight-bit candidates.
        wbits: Vec<u32>,
        /// Activation-bit candidates.
        abits: Vec<u32>,
    },
    /// Fixed bits per layer (retraining).
    Fixed {
        /// Where the bits come from.
        bits: FixedBits,
    },
    /// No quantization: every quantizable conv is a plain conv after a ReLU.
    FullPrecision,
}

fn default_classes() -> usize {
    1000
}
fn hwgq() -> PluginSpec {
    PluginSpec::new("hwgq")
}
fn gauss() -> PluginSpec {
    PluginSpec::new("gauss")
}
fn softmax() -> PluginSpec {
    PluginSpec::new("softmax")
}
fn bitops() -> PluginSpec {
    PluginSpec::new("bitops")
}

/// A complete model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The backbone plugin.
    pub backbone: PluginSpec,
    /// Number of classes of the final layer.
    #[serde(default = "default_classes")]
    pub num_classes: usize,
    /// Search, fixed or full precision.
    pub mode: QuantMode,
    /// The activation quantizer.
    #[serde(default = "hwgq")]
    pub act_quantizer: PluginSpec,
    /// The weight quantizer.
    #[serde(default = "gauss")]
    pub weight_quantizer: PluginSpec,
    /// The search relaxation.
    #[serde(default = "softmax")]
    pub relaxation: PluginSpec,
    /// The complexity cost.
    #[serde(default = "bitops")]
    pub cost: PluginSpec,
}

impl ModelConfig {
    /// A configuration with the EdMIPS plugins (hwgq, gauss, softmax, bitops).
    pub fn edmips(backbone: &str, mode: QuantMode) -> Self {
        ModelConfig {
            backbone: PluginSpec::new(backbone),
            num_classes: default_classes(),
            mode,
            act_quantizer: hwgq(),
            weight_quantizer: gauss(),
            relaxation: softmax(),
            cost: bitops(),
        }
    }

    /// EdMIPS's search candidates: weights {1,2,3,4}, activations {2,3,4}.
    pub fn edmips_search(backbone: &str) -> Self {
        Self::edmips(backbone, QuantMode::Search { wbits: vec![1, 2, 3, 4], abits: vec![2, 3, 4] })
    }

    /// Whether this is a search configuration.
    pub fn is_search(&self) -> bool {
        matches!(self.mode, QuantMode::Search { .. })
    }
}
