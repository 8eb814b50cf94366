//! The `edmips` command line: a thin wrapper over [`edmips::cli::main`], the same entry point a
//! third-party plugin crate's binary calls.

fn main() -> std::process::ExitCode {
    edmips::cli::main()
}
