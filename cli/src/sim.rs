//! `herald sim`: simulate one global registration on N nodes, deterministically.

mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use herald_core::{DEFAULT_FANOUT, Node};
use herald_sim::{
    Faults, NaiveNode, Protocol, RunReport, Scenario, Script, SimOptions, Simulation, TraceMode,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Simulate a global registration on N nodes (deterministic: same seed, same run).
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Nodes in the job.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: u32,
    /// Nodes requesting the same registration at once (control replication).
    #[arg(long, short = 's', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub requesters: u32,
    /// Children per node in the dissemination tree.
    #[arg(long, short = 'k', default_value_t = DEFAULT_FANOUT, value_parser = clap::value_parser!(u32).range(1..))]
    pub fanout: u32,
    /// Root seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that each node crashes during the fault window (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub crash: f64,
    /// Expected broken links per node during the fault window (0 to 1): round(P·N)
    /// single links break, each noticed by both ends; the nodes declared down are
    /// fenced and end.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub link_faults: f64,
    /// The frame limit of every node, in bytes (at least the job's minimum, which
    /// the error names).
    #[arg(long, value_name = "BYTES")]
    pub frame_limit: Option<usize>,
    /// Faults happen within this many microseconds from the start.
    #[arg(long, default_value_t = 100)]
    pub fault_window_us: u64,
    /// Also run a baseline protocol on the same scenario, side by side.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Write herald's run as Chrome Trace Event JSON (opens in Perfetto).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Draw messages against N for herald and the naive baseline (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Baseline protocols to compare with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Every requester messages every node itself; every node answers it.
    Naive,
}

/// Jobs at least this large show a progress bar.
const PROGRESS_MIN_NODES: u32 = 2_000;

/// Runs `herald sim`.
pub fn run(args: SimArgs) -> Result<ExitCode> {
    if args.requesters > args.nodes {
        bail!(
            "--requesters {} exceeds --nodes {}",
            args.requesters,
            args.nodes
        );
    }
    if !(0.0..=1.0).contains(&args.crash) {
        bail!(
            "--crash {} is not a probability between 0 and 1",
            args.crash
        );
    }
    if !(0.0..=1.0).contains(&args.link_faults) {
        bail!(
            "--link-faults {} is not a probability between 0 and 1",
            args.link_faults
        );
    }
    let scenario = scenario(&args);
    let trace = if args.trace.is_some() {
        TraceMode::Keep
    } else {
        TraceMode::Hash
    };
    let mut herald = simulate::<Node>(&scenario, trace, !args.json)?;
    if let (Some(path), Some(bytes)) = (&args.trace, herald.trace.take()) {
        std::fs::write(path, bytes)
            .with_context(|| format!("cannot write the trace to {}", path.display()))?;
    }
    let baseline = match args.baseline {
        Some(Baseline::Naive) => Some(simulate::<NaiveNode>(
            &scenario,
            TraceMode::Hash,
            !args.json,
        )?),
        None => None,
    };
    if let Some(path) = &args.plot {
        plot::messages_against_nodes(&args, path)?;
    }
    if args.json {
        let mut value = serde_json::to_value(&herald)?;
        if let Some(baseline) = &baseline {
            value["baseline"] = serde_json::to_value(baseline)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&herald, baseline.as_ref());
        if let Some(path) = &args.trace {
            println!(
                "trace written to {} (open it in https://ui.perfetto.dev)",
                path.display()
            );
        }
        if let Some(path) = &args.plot {
            println!("plot written to {}", path.display());
        }
    }
    let broken = [Some(&herald), baseline.as_ref()]
        .into_iter()
        .flatten()
        .any(|r| !r.is_ok());
    Ok(if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The scenario the arguments describe: `requesters` nodes spread evenly over the
/// job all register one library at time 0; each node may crash.
pub fn scenario(args: &SimArgs) -> Scenario {
    let library = Script::new("libtasks.so").with_tasks(["saxpy"]);
    let link_failures = (args.link_faults * f64::from(args.nodes)).round() as u32;
    let faults = Faults {
        crash_ppm: (args.crash * 1_000_000.0).round() as u32,
        link_failures: if args.nodes > 1 { link_failures } else { 0 },
        lose_in_flight: args.crash > 0.0 || args.link_faults > 0.0,
        window_ns: args.fault_window_us.saturating_mul(1_000),
        ..Faults::default()
    };
    let scenario = Scenario::replicated(args.nodes, args.requesters, library)
        .with_fanout(args.fanout)
        .with_seed(args.seed)
        .with_faults(faults);
    match args.frame_limit {
        Some(bytes) => scenario.with_max_frame_bytes(bytes),
        None => scenario,
    }
}

/// Runs `scenario` with protocol `P`, with a progress bar on stderr for large jobs.
pub fn simulate<P: Protocol>(
    scenario: &Scenario,
    trace: TraceMode,
    progress: bool,
) -> Result<RunReport> {
    let options = SimOptions {
        trace,
        record_choices: false,
    };
    let mut simulation = Simulation::<P>::new(scenario.clone(), options)?;
    let bar = if progress && scenario.nodes >= PROGRESS_MIN_NODES {
        let expected = if P::NAME == NaiveNode::NAME {
            scenario.naive_message_bound()
        } else {
            scenario.message_bound()
        };
        let bar = ProgressBar::new(expected);
        let style = ProgressStyle::with_template(
            "{prefix:>7} [{bar:40}] {pos}/{len} messages ({elapsed})",
        )?;
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(P::NAME);
        Some(bar)
    } else {
        None
    };
    let mut steps = 0u64;
    while simulation.step() {
        steps += 1;
        if let Some(bar) = bar.as_ref().filter(|_| steps % 4096 == 0) {
            bar.set_position(simulation.progress().messages);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(simulation.finish())
}

fn print_summary(herald: &RunReport, baseline: Option<&RunReport>) {
    let reports: Vec<&RunReport> = [Some(herald), baseline].into_iter().flatten().collect();
    let row = |name: &str, value: &dyn Fn(&RunReport) -> String| {
        let cells: Vec<String> = reports
            .iter()
            .map(|r| format!("{:>16}", value(r)))
            .collect();
        println!("{name:<26}{}", cells.join(""));
    };
    row("", &|r| r.protocol.to_string());
    row("nodes / requesters / k", &|r| {
        format!("{} / {} / {}", r.nodes, r.requesters, r.fanout)
    });
    row("messages", &|r| r.messages.to_string());
    for kind in ["request", "disseminate", "ack", "complete", "down"] {
        row(&format!("  {kind}"), &|r| {
            r.messages_by_kind
                .get(kind)
                .copied()
                .unwrap_or(0)
                .to_string()
        });
    }
    row("bytes", &|r| r.bytes.to_string());
    row("critical-path hops", &|r| r.critical_path_hops.to_string());
    row("slowest answer (µs)", &|r| {
        format!("{:.1}", r.max_completion_ns as f64 / 1000.0)
    });
    row("all answered", &|r| r.completed.to_string());
    row("max invocations per key", &|r| {
        r.max_invocations_per_key.to_string()
    });
    row("crashed", &|r| r.crashed.len().to_string());
    row("fenced", &|r| r.fenced.len().to_string());
    row("named unreachable", &|r| r.unreachable.len().to_string());
    row("violations", &|r| r.violations.len().to_string());
    println!("seed {}  trace sha256 {}", herald.seed, herald.trace_sha256);
    for report in &reports {
        for violation in &report.violations {
            println!("{}: VIOLATION {violation}", report.protocol);
        }
    }
}
