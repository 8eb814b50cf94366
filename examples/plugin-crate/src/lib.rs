//! # edmips-example-plugins
//!
//! What a third-party plugin crate looks like: it depends on `edmips` only, adds plugins with
//! the same registration macros the built-ins use, and gets the whole command line with a
//! three-line binary (`src/bin/edmips-example.rs`):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     edmips_example_plugins::link();
//!     edmips::cli::main()
//! }
//! ```
//!
//! * [`uniform_act`]: a quantizer (a uniform activation quantizer with a fixed clip, with its
//!   own fused CPU/CUDA mixture kernel);
//! * [`memory_traffic`]: a complexity cost (weight and activation bits read per sample);
//! * a named configuration, `mixres20_uniform_traffic`, that searches ResNet-20 with both, so
//!   `edmips-example search -a mixres20_uniform_traffic` and `edmips-example inspect -a ...` run
//!   them through the command line.
//!
//! `examples/by_hand_quantizer.rs` and `examples/by_hand_cost.rs` use the two plugins from
//! code instead.

#![warn(missing_docs)]

pub mod memory_traffic;
pub mod uniform_act;

use edmips::core::{ModelConfig, PluginSpec, QuantMode, Result};

fn mixres20_uniform_traffic() -> Result<Box<ModelConfig>> {
    let mut c = ModelConfig::edmips("resnet20", QuantMode::Search { wbits: vec![1, 2, 3, 4], abits: vec![2, 3, 4] });
    c.num_classes = 10;
    c.act_quantizer = PluginSpec::new(uniform_act::ID);
    c.cost = PluginSpec::new(memory_traffic::ID);
    Ok(Box::new(c))
}

edmips::core::register_config! {
    id: "mixres20_uniform_traffic",
    summary: "Example: search CIFAR ResNet-20 with the uniform_act quantizer and the memory_traffic cost",
    build: |_| mixres20_uniform_traffic(),
}

/// Links this crate's registrations into the calling binary (inventory only sees linked
/// crates), and the built-in plugins with them.
pub fn link() {
    edmips::link_builtins();
    let _ = std::any::type_name::<uniform_act::UniformAct>();
}
