//! The whole `edmips` command line with this crate's plugins registered.

fn main() -> std::process::ExitCode {
    edmips_example_plugins::link();
    edmips::cli::main()
}
