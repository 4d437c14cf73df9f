//! The `herald` command line.

mod capacity;
mod demo;
mod local_ranks;
mod node;
mod run;
mod secret;
mod signals;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// herald: make dynamically loaded code exist on every node of a distributed job.
#[derive(Debug, Parser)]
#[command(name = "herald", version)]
struct Cli {
    /// Log more (repeat for more detail; without it, HERALD_LOG=error|warn|info|debug sets the level).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Start N ranks of a job on this machine: herald run -n N -- PROGRAM ARGS...
    ///
    /// If a rank fails, the others are stopped and herald run exits with its status
    /// (128 + the signal's number for a rank a signal killed).
    Run(run::RunArgs),
    /// Print a fresh cluster secret, or write it to a file with mode 0600 (--file F).
    Secret(secret::SecretArgs),
    /// Be one node of a job: rank 0 loads libraries and runs the top-level function.
    Node(node::NodeArgs),
    /// Nodes on loopback (four, or -n N) load a C plugin everywhere and run its tasks.
    Demo(demo::DemoArgs),
    /// Simulate a global registration on N nodes, deterministically (herald sim --nodes N).
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Without -v, HERALD_LOG sets the level, as for libherald.so and herald-python
    // (one variable reaches every rank of an mpirun or srun job).
    let level = match cli.verbose {
        0 => herald_host::ffi::log_level(),
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Commands::Run(args) => run::run(args),
        Commands::Node(args) => node::run(args),
        Commands::Secret(args) => secret::run(args),
        Commands::Demo(args) => demo::run(args),
        Commands::Sim(args) => sim::run(args),
    };
    result.unwrap_or_else(|error| {
        // Most errors already name the subcommand ("herald run: ...").
        let line = describe(&error);
        if line.starts_with("herald") {
            eprintln!("{line}");
        } else {
            eprintln!("herald: {line}");
        }
        ExitCode::FAILURE
    })
}

/// The error and its causes, joined by ": ", leaving out a cause whose text the
/// line already holds (many errors repeat their source in their own message).
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
