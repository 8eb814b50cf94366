//! Relaxations: [`softmax`] and [`gumbel`].

pub mod gumbel;
pub mod softmax;
