//! `herald demo`: four nodes on loopback; node 0 loads the example C plugin, whose
//! constructor registers its tasks on every node; every task runs on every node;
//! then a table of what each node did.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

use crate::local_ranks::Stream;
use crate::node::parse_stats_line;
use crate::run::{report, run_local_job};

/// The example plugin and the header, embedded so the demo runs from anywhere.
const PLUGIN_SOURCE: &str = include_str!("../../examples/c-plugin/plugin.c");
const HEADER: &str = include_str!("../../include/herald.h");

/// Flags of `herald demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(short = 'n', long = "nodes", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: u32,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = DemoDir::create()?;
    let plugin = build_plugin(dir.path())?;
    println!(
        "herald demo: {} nodes on loopback; node 0 loads {} (compiled just now with cc)\n",
        args.nodes,
        plugin.display()
    );
    let exe = std::env::current_exe().context("finding the herald executable")?;
    let node_args: Vec<OsString> = vec![
        "node".into(),
        "--load".into(),
        plugin.clone().into(),
        "--main".into(),
        format!("{}:example_main", plugin.display()).into(),
        "--library-path".into(),
        dir.path().into(),
        "--stats".into(),
    ];
    let stats: Arc<Mutex<BTreeMap<u32, BTreeMap<String, u64>>>> = Arc::default();
    let collected = Arc::clone(&stats);
    let outcome = run_local_job(
        args.nodes,
        &exe.into_os_string(),
        &node_args,
        &[],
        move |rank, stream, line| match parse_stats_line(line) {
            Some(pairs) if stream == Stream::Stdout => {
                let mut all = collected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                all.insert(rank, pairs.into_iter().collect());
            }
            _ => println!("  [node {rank}] {line}"),
        },
    )?;
    let stats = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    println!();
    print_table(&stats);
    Ok(report(&outcome))
}

/// Compiles the embedded example plugin with `cc` into `dir`.
fn build_plugin(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::write(dir.join("herald.h"), HEADER).context("writing herald.h")?;
    let source = dir.join("plugin.c");
    std::fs::write(&source, PLUGIN_SOURCE).context("writing plugin.c")?;
    let output = dir.join("libexample_plugin.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&output)
        .arg("-I")
        .arg(dir)
        .arg(&source)
        .status()
        .context("running cc (the demo compiles its C plugin; install a C compiler, e.g. gcc)")?;
    if !status.success() {
        bail!("cc failed to compile the example plugin ({status})");
    }
    Ok(output)
}

/// A private scratch directory, removed when the demo ends.
struct DemoDir(std::path::PathBuf);

impl DemoDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("herald-demo-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_table(stats: &BTreeMap<u32, BTreeMap<String, u64>>) {
    let columns = [
        ("registrations run", "invocations"),
        ("done after ms", "ready_ms"),
        ("tasks run", "tasks"),
        ("msgs sent", "messages_sent"),
        ("bytes sent", "bytes_sent"),
        ("msgs recv", "messages_received"),
        ("bytes recv", "bytes_received"),
    ];
    let mut header = format!("{:>6}", "node");
    for (title, _) in &columns {
        header.push_str(&format!(" | {title:>17}"));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (node, values) in stats {
        let mut row = format!("{node:>6}");
        for (_, key) in &columns {
            let value = values.get(*key).copied().unwrap_or(0);
            row.push_str(&format!(" | {value:>17}"));
        }
        println!("{row}");
    }
    println!(
        "\nregistrations run: the plugin's callback and its batch of task variants, once per node;\n\
         done after: time from the node's start until its last registration finished there."
    );
}
