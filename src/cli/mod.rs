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
pub mod export;
pub mod inspect;
pub mod list;
pub mod run_args;
pub mod search;
pub mod sweep;
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
    /// A grid of searches (and retrains) over configuration keys, with uniform baselines:
    /// one results table and a Pareto plot.
    Sweep(sweep::SweepArgs),
    /// Write a retrained checkpoint as a QONNX or plain ONNX model.
    Export(export::ExportArgs),
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
            Command::Sweep(a) => sweep::run(&a),
            Command::Export(a) => export::run(&a),
        }
    }
}

/// Exit status of a run stopped by Ctrl-C after saving its checkpoint (128 + SIGINT, as a
/// shell reports a process ended by Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// A search or retrain stopped by Ctrl-C after saving a checkpoint: not a failure, not a
/// finished run. [`main_with`] prints it and exits with [`EXIT_INTERRUPTED`].
#[derive(Debug)]
pub struct Interrupted {
    /// The subcommand (`search` or `train`).
    pub command: &'static str,
    /// The checkpoint that was saved.
    pub checkpoint: std::path::PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.command == "sweep" {
            return write!(
                f,
                "interrupted: the sweep stopped before finishing; rerun the same command (same --out {}) to continue it",
                self.checkpoint.display()
            );
        }
        write!(
            f,
            "interrupted: the {} stopped before finishing; continue it exactly with the same command plus --resume {}",
            self.command,
            self.checkpoint.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Parses `args` (the first one is the program name) and runs the command. Exit statuses: 0
/// success; 1 an error (printed as `error: ...`); 2 bad arguments (clap);
/// [`EXIT_INTERRUPTED`] a run stopped by Ctrl-C after saving its checkpoint.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    crate::engine::memory::tune_allocator();
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INTERRUPTED)
        }
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
