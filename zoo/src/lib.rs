//! # edmips-zoo
//!
//! Backbones and named EdMIPS configurations (filled by the zoo work).

#![warn(missing_docs)]

/// Referenced by the facade crate so this crate is always linked.
pub const LINK: &str = "edmips-zoo";
