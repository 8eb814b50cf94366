//! A second registration of an existing id is an error naming both modules. (Its own test
//! binary: the duplicate would poison the registry of any other test linked with it.)

use edmips::core::candle::Tensor;
use edmips::{Operand, Quantizer, Result};

#[derive(Debug)]
struct Impostor;

impl Quantizer for Impostor {
    fn id(&self) -> &str {
        "hwgq"
    }
    fn check(&self, _: Operand, _: u32) -> Result<()> {
        Ok(())
    }
    fn quantize(&self, x: &Tensor, _: Operand, _: u32, _: &[Tensor]) -> Result<Tensor> {
        Ok(x.clone())
    }
}

fn build(_: &edmips::core::Table) -> Result<Box<dyn Quantizer>> {
    Ok(Box::new(Impostor))
}

edmips::core::register_quantizer! { id: "hwgq", summary: "an impostor", build: build }

#[test]
fn duplicate_ids_are_reported_with_both_modules() {
    edmips::link_builtins();
    let e = edmips::registry::quantizers().unwrap_err().to_string();
    assert!(e.contains("duplicate quantizer id `hwgq`"), "{e}");
    assert!(e.contains("edmips_plugins::quant::hwgq") && e.contains("registry_duplicate"), "{e}");
    // Other kinds are unaffected.
    assert!(edmips::registry::costs().is_ok());
}
