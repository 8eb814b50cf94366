//! The `edmips` command line as library code, one file per subcommand.
//!
//! [`main`] parses the process arguments and runs a subcommand; every registry lookup sees the
//! plugins linked into the calling binary. A crate that adds plugins gets the whole tool with
//! a three-line binary:
//!
//! ```no_run
//! // use my_plugins as _; // links the crate, so its registrations are seen
//! fn main() -> std::process::ExitCode {
//!     edmips::cli::main()
//! }
//! ```

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod default_job;
pub mod inspect;
pub mod list;
pub mod run_args;
pub mod search;
pub mod train;

/// Differentiable mixed-precision quantization search (EdMIPS) and retraining.
#[derive(Parser, Debug)]
#[command(name = "edmips", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the registered plugins and named configurations.
    List(list::ListArgs),
    /// Show the searchable layers of a named configuration and their complexity.
    Inspect(inspect::InspectArgs),
    /// Mixed-precision search (the reference's search.py). Without DATA: the default job, a
    /// small search on the embedded Fashion-MNIST subset.
    Search(search::SearchArgs),
    /// Retrain a fixed-bit network from scratch (the reference's main.py).
    Train(train::TrainArgs),
    /// Benchmarks: one training step, or the data pipeline.
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        crate::link_builtins();
        match self.command {
            Command::List(a) => list::run(&a),
            Command::Inspect(a) => inspect::run(&a),
            Command::Search(a) => search::run_search(&a),
            Command::Train(a) => train::run_train(&a),
            Command::Bench(a) => bench::run_bench(&a),
        }
    }
}

/// Parses `args` (the first one is the program name) and runs the command; errors are
/// printed as `error: ...` and give exit status 1, bad arguments clap's status 2.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `edmips` binary: [`main_with`] over the process arguments.
pub fn main() -> ExitCode {
    main_with(std::env::args_os())
}
