//! herald-python's command line: its own options first, then what Python runs.
//!
//! ```text
//! herald-python [-n N] [--library-path DIR]... SCRIPT [ARGS...]
//! herald-python [-n N] [--library-path DIR]... -m MODULE [ARGS...]
//! herald-python [-n N] [--library-path DIR]... -c CODE [ARGS...]
//! ```
//!
//! Everything from the first argument that is not one of herald-python's own
//! options on is handed to Python unchanged (`herald/_main.py` reads it the way
//! `python` would), so `herald-python -n 4 -m pytest -x tests` works.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Run Python as a node of a job.
    Run(Options),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// The options of a run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// `-n N`: the size of the loopback job to start; `None` inside a job that a
    /// launcher (`herald run`, `mpirun`, `srun`) started.
    pub(crate) nodes: Option<u32>,
    /// `--library-path DIR` (repeatable): more directories native libraries may
    /// be loaded from.
    pub(crate) library_paths: Vec<PathBuf>,
    /// What Python runs, with its arguments: `SCRIPT ARGS`, `-m MODULE ARGS` or
    /// `-c CODE ARGS`.
    pub(crate) python_args: Vec<OsString>,
}

/// The usage text.
pub(crate) const USAGE: &str = "\
herald-python: CPython as a node of a herald job; rank 0 runs the program,
the other ranks serve it until it ends.

usage:
  herald-python [-n N] [--library-path DIR]... SCRIPT [ARGS...]
  herald-python [-n N] [--library-path DIR]... -m MODULE [ARGS...]
  herald-python [-n N] [--library-path DIR]... -c CODE [ARGS...]

options:
  -n, --nodes N   start a job of N processes on this machine (through
                  `herald run`, found next to herald-python or at $HERALD_BIN);
                  without it, join the job described by the environment
                  (`herald run -n N -- herald-python ...`, mpirun, srun), or
                  run as a job of one node
  --library-path DIR
                  a directory native libraries may be loaded from, added to
                  the defaults (repeatable; give it on every node: -n does)
  -h, --help      print this help
  --version       print the version

Native libraries load only from allowed directories, checked on every node:
Python's site-packages and the active virtualenv's, the working directory and
the directory of herald-python (unless one is /, the home directory or
writable by anyone), HERALD_LIBRARY_PATH and --library-path.

environment:
  HERALD_LIBRARY_PATH   more directories native libraries may be loaded from,
                        separated by ':' (added to the defaults)
  VIRTUAL_ENV           an activated virtualenv's packages are importable (one of
                        another Python version is refused)
  PYTHONHOME            where the standard library is (default: the prefix of the
                        Python herald-python was built against, whatever is on PATH)
  HERALD_HEARTBEAT_MS, HERALD_PEER_TIMEOUT_MS
                        heartbeat and silence before a peer is declared down
                        (defaults 1000 and 10000; 0 turns detection off)
  HERALD_LOG            log level of the runtime: error, warn (default), info, debug
";

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    let mut nodes = None;
    let mut library_paths = Vec::new();
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or_default();
        match text {
            "-h" | "--help" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            "-n" | "--nodes" => {
                let value = args.next().context("-n needs the number of nodes")?;
                nodes = Some(parse_nodes(&value.to_string_lossy())?);
            }
            "--library-path" => {
                let value = args.next().context("--library-path needs a directory")?;
                library_paths.push(PathBuf::from(value));
            }
            "--" => return finish(nodes, library_paths, args.collect()),
            _ if text.starts_with("--library-path=") => {
                library_paths.push(PathBuf::from(&text["--library-path=".len()..]));
            }
            _ if text.starts_with("--nodes=") => {
                nodes = Some(parse_nodes(&text["--nodes=".len()..])?);
            }
            _ if text.starts_with("-n") && text.len() > 2 => {
                nodes = Some(parse_nodes(&text[2..])?);
            }
            _ => {
                let mut python_args = vec![arg];
                python_args.extend(args);
                return finish(nodes, library_paths, python_args);
            }
        }
    }
    finish(nodes, library_paths, Vec::new())
}

fn finish(
    nodes: Option<u32>,
    library_paths: Vec<PathBuf>,
    python_args: Vec<OsString>,
) -> anyhow::Result<Command> {
    if python_args.is_empty() {
        bail!("nothing to run: give a script, -m MODULE or -c CODE (see --help)");
    }
    Ok(Command::Run(Options {
        nodes,
        library_paths,
        python_args,
    }))
}

fn parse_nodes(text: &str) -> anyhow::Result<u32> {
    match text.trim().parse::<u32>() {
        Ok(0) | Err(_) => bail!("-n takes a number of nodes of at least 1, not {text:?}"),
        Ok(nodes) => Ok(nodes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> anyhow::Result<Command> {
        parse(args.iter().map(OsString::from))
    }

    fn run(nodes: Option<u32>, python_args: &[&str]) -> Command {
        Command::Run(Options {
            nodes,
            library_paths: Vec::new(),
            python_args: python_args.iter().map(OsString::from).collect(),
        })
    }

    #[test]
    fn library_paths_are_herald_pythons_own() {
        let parsed = parse_str(&[
            "--library-path",
            "/opt/a",
            "-n",
            "2",
            "--library-path=/opt/b",
            "s.py",
            "--library-path",
            "x",
        ])
        .unwrap();
        assert_eq!(
            parsed,
            Command::Run(Options {
                nodes: Some(2),
                library_paths: vec![PathBuf::from("/opt/a"), PathBuf::from("/opt/b")],
                python_args: ["s.py", "--library-path", "x"]
                    .iter()
                    .map(OsString::from)
                    .collect(),
            })
        );
        assert!(parse_str(&["--library-path"]).is_err());
    }

    #[test]
    fn python_arguments_pass_through_untouched() {
        assert_eq!(
            parse_str(&["-n", "4", "-m", "pytest", "-n", "2"]).unwrap(),
            run(Some(4), &["-m", "pytest", "-n", "2"])
        );
        assert_eq!(
            parse_str(&["script.py", "--help"]).unwrap(),
            run(None, &["script.py", "--help"])
        );
        assert_eq!(
            parse_str(&["-n2", "--", "-c", "print(1)"]).unwrap(),
            run(Some(2), &["-c", "print(1)"])
        );
        assert_eq!(
            parse_str(&["--nodes=8", "s.py"]).unwrap(),
            run(Some(8), &["s.py"])
        );
    }

    #[test]
    fn bad_node_counts_and_empty_runs_are_refused() {
        assert!(parse_str(&["-n", "0", "s.py"]).is_err());
        assert!(parse_str(&["-n", "many", "s.py"]).is_err());
        assert!(parse_str(&["-n"]).is_err());
        assert!(parse_str(&["-n", "2"]).is_err());
        assert_eq!(parse_str(&["-h", "s.py"]).unwrap(), Command::Help);
    }
}
