//! Complexity costs: [`bitops`] (EdMIPS), [`activation_memory`], [`size`] (weight memory) and
//! [`latency_lut`] (measured latency from a table).

pub mod activation_memory;
pub mod bitops;
pub mod latency_lut;
pub mod size;
