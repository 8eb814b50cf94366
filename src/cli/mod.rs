//! Subcommands of the `edmips` binary, one file each.

pub mod list;
