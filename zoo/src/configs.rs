//! The named EdMIPS configurations (decisions.md R7), registered with `register_config!` and listed
//! by `edmips list --kind config`.
//!
//! | name | mode |
//! |---|---|
//! | `mix{res18,res50,google,inception}_w1234a234` | search, w {1,2,3,4} × a {2,3,4} |
//! | `quant{...}_2w2a` | every layer w2/a2 |
//! | `quant{...}_cfg` | per-layer bits from an architecture file (`--ac`) |
//! | `quant{...}_pretrained_cfg` | the authors' searched architectures (hard-coded below) |
//!
//! Beyond the reference: `mixres20_w1234a234`, `quantres20_cfg`, `quantres20_2w2a` (CIFAR
//! ResNet-20, 10 classes), and `mixtiny_w1234a234`, `quanttiny_cfg` (the golden tiny network,
//! 10 classes).
//!
//! The pretrained lists are the reference's hard-coded `*_pretrained_cfg` architectures as the
//! golden `*_complexity.json` `fixed_configs` give them; their normalised bits reproduce the
//! README's 1.992 / 2.007 / 1.994 / 1.982.

use edmips_core::{FixedBits, ModelConfig, Params, PluginSpec, QuantMode, Result, Table};

/// `quantres18_pretrained_cfg`: the authors' searched architecture (reference hard-coded lists), `[wbit, abit]` per layer.
const RES18_PRETRAINED: [[u32; 2]; 19] = [
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 2],
    [2, 2],
    [4, 4],
    [2, 2],
    [1, 2],
    [3, 3],
    [2, 3],
    [4, 3],
    [2, 2],
    [1, 2],
    [3, 3],
    [2, 3],
    [4, 3],
    [2, 2],
    [2, 2],
];

/// `quantres50_pretrained_cfg`: the authors' searched architecture (reference hard-coded lists), `[wbit, abit]` per layer.
const RES50_PRETRAINED: [[u32; 2]; 52] = [
    [4, 4],
    [1, 3],
    [1, 3],
    [3, 4],
    [1, 2],
    [1, 2],
    [1, 3],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 3],
    [1, 3],
    [1, 3],
    [1, 2],
    [1, 2],
    [1, 3],
    [1, 2],
    [1, 3],
    [1, 3],
    [1, 2],
    [1, 3],
    [3, 2],
    [2, 3],
    [3, 3],
    [2, 3],
    [1, 3],
    [1, 2],
    [2, 3],
    [1, 3],
    [1, 2],
    [2, 3],
    [1, 3],
    [1, 2],
    [1, 3],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 3],
    [2, 3],
    [3, 3],
    [2, 3],
    [1, 3],
    [2, 3],
    [3, 3],
    [3, 3],
    [2, 3],
    [4, 3],
];

/// `quantgoogle_pretrained_cfg`: the authors' searched architecture (reference hard-coded lists), `[wbit, abit]` per layer.
const GOOGLE_PRETRAINED: [[u32; 2]; 56] = [
    [4, 4],
    [1, 2],
    [4, 4],
    [3, 3],
    [1, 2],
    [4, 3],
    [3, 2],
    [4, 3],
    [3, 3],
    [1, 2],
    [1, 2],
    [3, 3],
    [1, 2],
    [1, 3],
    [3, 3],
    [4, 3],
    [1, 2],
    [4, 3],
    [3, 3],
    [4, 4],
    [3, 3],
    [3, 3],
    [1, 2],
    [4, 3],
    [2, 2],
    [3, 3],
    [3, 3],
    [1, 2],
    [1, 2],
    [4, 3],
    [2, 2],
    [3, 3],
    [3, 3],
    [1, 2],
    [1, 2],
    [4, 3],
    [1, 2],
    [3, 3],
    [3, 3],
    [1, 2],
    [1, 2],
    [4, 3],
    [1, 2],
    [3, 3],
    [4, 3],
    [4, 3],
    [2, 3],
    [4, 3],
    [3, 3],
    [4, 4],
    [4, 3],
    [4, 3],
    [3, 2],
    [4, 3],
    [3, 2],
    [4, 4],
];

/// `quantinception_pretrained_cfg`: the authors' searched architecture (reference hard-coded lists), `[wbit, abit]` per layer.
const INCEPTION_PRETRAINED: [[u32; 2]; 93] = [
    [1, 4],
    [1, 3],
    [4, 4],
    [1, 2],
    [4, 4],
    [3, 4],
    [1, 3],
    [3, 4],
    [1, 3],
    [1, 2],
    [1, 3],
    [4, 4],
    [4, 3],
    [1, 2],
    [1, 3],
    [1, 3],
    [1, 2],
    [1, 3],
    [4, 4],
    [4, 3],
    [2, 2],
    [3, 3],
    [1, 3],
    [1, 2],
    [3, 3],
    [1, 2],
    [3, 3],
    [1, 2],
    [1, 2],
    [4, 4],
    [1, 3],
    [1, 3],
    [2, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 3],
    [4, 3],
    [1, 3],
    [2, 2],
    [2, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 3],
    [4, 3],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 3],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 3],
    [4, 3],
    [1, 2],
    [1, 2],
    [2, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [3, 3],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [1, 2],
    [4, 4],
    [4, 4],
    [3, 3],
    [3, 3],
    [4, 4],
    [1, 3],
    [1, 2],
    [3, 3],
    [4, 3],
    [3, 3],
    [3, 3],
    [4, 3],
    [4, 3],
    [3, 2],
    [1, 2],
    [3, 2],
    [3, 2],
    [4, 3],
];

fn search(backbone: &str, classes: usize) -> ModelConfig {
    ModelConfig { num_classes: classes, ..ModelConfig::edmips_search(backbone) }
}

fn with_relaxation(c: ModelConfig, id: &str) -> ModelConfig {
    ModelConfig { relaxation: PluginSpec::new(id), ..c }
}

fn with_weights(c: ModelConfig, id: &str) -> ModelConfig {
    ModelConfig { weight_quantizer: PluginSpec::new(id), ..c }
}

fn with_acts(c: ModelConfig, id: &str) -> ModelConfig {
    ModelConfig { act_quantizer: PluginSpec::new(id), ..c }
}

/// LSQ for both operands (learned steps).
fn lsq(c: ModelConfig) -> ModelConfig {
    with_weights(with_acts(c, "lsq"), "lsq")
}

/// PACT activations with DoReFa weights (the PACT paper's pairing), searched with Gumbel-softmax.
fn pact_gumbel(c: ModelConfig) -> ModelConfig {
    with_relaxation(with_weights(with_acts(c, "pact"), "dorefa"), "gumbel")
}

fn fixed(backbone: &str, classes: usize, bits: FixedBits) -> ModelConfig {
    ModelConfig { num_classes: classes, ..ModelConfig::edmips(backbone, QuantMode::Fixed { bits }) }
}

fn uniform(backbone: &str, classes: usize) -> ModelConfig {
    fixed(backbone, classes, FixedBits::Uniform { wbit: 2, abit: 2 })
}

fn arch_file(backbone: &str, classes: usize) -> ModelConfig {
    fixed(backbone, classes, FixedBits::ArchFile)
}

fn list(backbone: &str, classes: usize, l: &[[u32; 2]]) -> ModelConfig {
    fixed(backbone, classes, FixedBits::List { layers: l.to_vec() })
}

/// Registers one named configuration: `config!(id, summary, |t| expr)`.
macro_rules! config {
    ($id:literal, $summary:literal, $make:expr) => {
        const _: () = {
            fn build(t: &Table) -> Result<Box<ModelConfig>> {
                Params::new($id, t).deny_unknown(&[])?;
                let make: fn() -> ModelConfig = $make;
                Ok(Box::new(make()))
            }
            edmips_core::register_config! { id: $id, summary: $summary, build: build }
        };
    };
}

config!("mixres18_w1234a234", "search ResNet-18 (ImageNet), w{1,2,3,4} a{2,3,4}", || search("resnet18", 1000));
config!("mixres50_w1234a234", "search ResNet-50 (ImageNet), w{1,2,3,4} a{2,3,4}", || search("resnet50", 1000));
config!("mixgoogle_w1234a234", "search GoogLeNet (ImageNet), w{1,2,3,4} a{2,3,4}", || search("googlenet", 1000));
config!("mixinception_w1234a234", "search Inception-V3 (ImageNet, 299), w{1,2,3,4} a{2,3,4}", || {
    search("inception_v3", 1000)
});
config!("quantres18_2w2a", "ResNet-18, every layer w2/a2", || uniform("resnet18", 1000));
config!("quantres50_2w2a", "ResNet-50, every layer w2/a2", || uniform("resnet50", 1000));
config!("quantgoogle_2w2a", "GoogLeNet, every layer w2/a2", || uniform("googlenet", 1000));
config!("quantinception_2w2a", "Inception-V3, every layer w2/a2", || uniform("inception_v3", 1000));
config!("quantres18_cfg", "ResNet-18, per-layer bits from an architecture file (--ac)", || arch_file("resnet18", 1000));
config!("quantres50_cfg", "ResNet-50, per-layer bits from an architecture file (--ac)", || arch_file("resnet50", 1000));
config!("quantgoogle_cfg", "GoogLeNet, per-layer bits from an architecture file (--ac)", || {
    arch_file("googlenet", 1000)
});
config!("quantinception_cfg", "Inception-V3, per-layer bits from an architecture file (--ac)", || {
    arch_file("inception_v3", 1000)
});
config!("quantres18_pretrained_cfg", "ResNet-18, the authors' searched architecture (bit 1.992)", || {
    list("resnet18", 1000, &RES18_PRETRAINED)
});
config!("quantres50_pretrained_cfg", "ResNet-50, the authors' searched architecture (bit 2.007)", || {
    list("resnet50", 1000, &RES50_PRETRAINED)
});
config!("quantgoogle_pretrained_cfg", "GoogLeNet, the authors' searched architecture (bit 1.994)", || {
    list("googlenet", 1000, &GOOGLE_PRETRAINED)
});
config!("quantinception_pretrained_cfg", "Inception-V3, the authors' searched architecture (bit 1.982)", || {
    list("inception_v3", 1000, &INCEPTION_PRETRAINED)
});
config!("mixres20_w1234a234", "search CIFAR ResNet-20 (10 classes), w{1,2,3,4} a{2,3,4}", || search("resnet20", 10));
config!(
    "mixres20_gumbel_w1234a234",
    "search CIFAR ResNet-20 with the Gumbel-softmax relaxation, w{1,2,3,4} a{2,3,4}",
    || { with_relaxation(search("resnet20", 10), "gumbel") }
);
config!(
    "mixres20_dorefa_w1234a234",
    "search CIFAR ResNet-20 with DoReFa weights (hwgq activations), w{1,2,3,4} a{2,3,4}",
    || { with_weights(search("resnet20", 10), "dorefa") }
);
config!(
    "mixres18_gumbel_w1234a234",
    "search ResNet-18 with the Gumbel-softmax relaxation, w{1,2,3,4} a{2,3,4}",
    || { with_relaxation(search("resnet18", 1000), "gumbel") }
);
config!(
    "mixres18_dorefa_w1234a234",
    "search ResNet-18 with DoReFa weights (hwgq activations), w{1,2,3,4} a{2,3,4}",
    || { with_weights(search("resnet18", 1000), "dorefa") }
);
config!(
    "mixres20_lsq_w1234a234",
    "search CIFAR ResNet-20 with LSQ (learned steps) for weights and activations, w{1,2,3,4} a{2,3,4}",
    || { lsq(search("resnet20", 10)) }
);
config!(
    "mixres20_pact_gumbel_w1234a234",
    "search CIFAR ResNet-20 with PACT activations, DoReFa weights and Gumbel-softmax, w{1,2,3,4} a{2,3,4}",
    || { pact_gumbel(search("resnet20", 10)) }
);
config!(
    "mixres18_lsq_w1234a234",
    "search ResNet-18 with LSQ (learned steps) for weights and activations, w{1,2,3,4} a{2,3,4}",
    || { lsq(search("resnet18", 1000)) }
);
config!(
    "mixres18_pact_gumbel_w1234a234",
    "search ResNet-18 with PACT activations, DoReFa weights and Gumbel-softmax, w{1,2,3,4} a{2,3,4}",
    || { pact_gumbel(search("resnet18", 1000)) }
);
config!("quantres20_lsq_cfg", "CIFAR ResNet-20 with LSQ quantizers, bits from an architecture file (--ac)", || {
    lsq(arch_file("resnet20", 10))
});
config!("quantres20_lsq_2w2a", "CIFAR ResNet-20 with LSQ quantizers, every layer w2/a2", || {
    lsq(uniform("resnet20", 10))
});
config!(
    "quantres20_pact_cfg",
    "CIFAR ResNet-20 with PACT activations and DoReFa weights, bits from an architecture file (--ac)",
    || { with_weights(with_acts(arch_file("resnet20", 10), "pact"), "dorefa") }
);
config!("quantres20_cfg", "CIFAR ResNet-20 (10 classes), bits from an architecture file (--ac)", || {
    arch_file("resnet20", 10)
});
config!("quantres20_2w2a", "CIFAR ResNet-20 (10 classes), every layer w2/a2", || uniform("resnet20", 10));
config!("mixtiny_w1234a234", "search the golden tiny network (16x16, 10 classes), w{1,2,3,4} a{2,3,4}", || {
    search("tiny", 10)
});
config!("quanttiny_cfg", "the golden tiny network (10 classes), bits from an architecture file (--ac)", || {
    arch_file("tiny", 10)
});
