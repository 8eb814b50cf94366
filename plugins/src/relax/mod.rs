//! Relaxations: [`softmax`].

pub mod softmax;
