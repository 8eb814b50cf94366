//! Complexity costs: [`bitops`].

pub mod bitops;
