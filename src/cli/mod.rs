//! Subcommands of the `edmips` binary, one file each.

pub mod bench;
pub mod inspect;
pub mod list;
pub mod run_args;
pub mod search;
pub mod train;
