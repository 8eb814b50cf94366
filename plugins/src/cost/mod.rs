//! Complexity costs: [`bitops`] and [`activation_memory`].

pub mod activation_memory;
pub mod bitops;
