//! The `edmips` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Differentiable mixed-precision quantization search (EdMIPS) and retraining.
#[derive(Parser, Debug)]
#[command(name = "edmips", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the registered plugins and named configurations.
    List(cli::list::ListArgs),
    /// Show the searchable layers of a named configuration and their complexity.
    Inspect(cli::inspect::InspectArgs),
    /// Mixed-precision search (the reference's search.py). Without DATA: the default job, a
    /// small search on the embedded Fashion-MNIST subset.
    Search(cli::search::SearchArgs),
    /// Retrain a fixed-bit network from scratch (the reference's main.py).
    Train(cli::train::TrainArgs),
    /// Benchmarks: one training step, or the data pipeline.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    edmips::link_builtins();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(a) => cli::list::run(&a),
        Command::Inspect(a) => cli::inspect::run(&a),
        Command::Search(a) => cli::search::run_search(&a),
        Command::Train(a) => cli::train::run_train(&a),
        Command::Bench(a) => cli::bench::run_bench(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
