//! # edmips-zoo
//!
//! Backbones and the named EdMIPS configurations, built on the public API of `edmips-core`.
//!
//! | backbone id | file | input | searchable layers |
//! |---|---|---|---|
//! | `resnet18`, `resnet50` | [`resnet`] | 224 | 19, 52 |
//! | `googlenet` | [`googlenet`] | 224 | 56 |
//! | `inception_v3` | [`inception_v3`] | 299 | 93 |
//! | `resnet20` | [`resnet20`] | 32 (or 28×28 grayscale) | 20 |
//! | `tiny` | [`tiny`] | 16 | 5 |
//!
//! The residual blocks are shared ([`blocks`]), as is GoogLeNet's and Inception-V3's
//! BN-then-quantized-conv ([`basic_quant_conv`]). The named configurations (`mixres18_w1234a234`,
//! `quantres18_cfg`, ...) are in [`configs`].

#![warn(missing_docs)]

pub mod basic_quant_conv;
pub mod blocks;
pub mod configs;
pub mod googlenet;
pub mod inception_v3;
pub mod resnet;
pub mod resnet20;
pub mod tiny;

/// Referenced by the facade crate so this crate is always linked.
pub const LINK: &str = "edmips-zoo";
