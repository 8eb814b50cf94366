//! Subcommands of the `edmips` binary, one file each.

pub mod inspect;
pub mod list;
