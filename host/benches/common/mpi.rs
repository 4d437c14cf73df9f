//! The Open MPI reference the benchmarks print next to herald's figures, measured
//! in the same run: `mpi_reference.c` compiled with `mpicc` and started with
//! `mpirun` over TCP (`--mca pml ob1 --mca btl tcp,self`, loopback only, so no
//! shared memory). Used by host/benches/registration.rs, transport-tcp's
//! pingpong bench and cli/benches/scale.rs (included with `#[path]`). Every
//! failure is a reason to print ("reference skipped: ..."), never a panic.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE: &str = include_str!("mpi_reference.c");

/// Longest one `mpirun` may take before it is killed and reported as failed.
const MPIRUN_GUARD: Duration = Duration::from_secs(600);

/// The reference program, compiled.
pub struct MpiReference {
    program: PathBuf,
}

/// Median and 90th percentile of a latency, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub median_us: f64,
    pub p90_us: f64,
}

impl MpiReference {
    /// Compiles the reference into `dir` with `mpicc`, or says why it cannot
    /// (Open MPI missing: Debian's `openmpi-bin` and `libopenmpi-dev`).
    pub fn build(dir: &Path) -> Result<MpiReference, String> {
        for tool in ["mpicc", "mpirun"] {
            if Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
            {
                return Err(format!(
                    "`{tool}` not found (install Debian's openmpi-bin and libopenmpi-dev)"
                ));
            }
        }
        let source = dir.join("mpi_reference.c");
        std::fs::write(&source, SOURCE)
            .map_err(|e| format!("writing {}: {e}", source.display()))?;
        let program = dir.join("mpi_reference");
        let output = Command::new("mpicc")
            .args(["-O2", "-o"])
            .arg(&program)
            .arg(&source)
            .output()
            .map_err(|e| format!("running mpicc: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mpicc failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(MpiReference { program })
    }

    /// Wall time of `mpirun -np N` of a program that only calls `MPI_Init` and
    /// `MPI_Finalize`: the median of `runs`.
    pub fn startup(&self, nodes: u32, runs: usize) -> Result<Duration, String> {
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            self.mpirun(nodes, &["init"])?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// `MPI_Bcast` of `bytes` from rank 0 then `MPI_Reduce` of `bytes` to rank 0,
    /// timed on rank 0 over `iters` iterations after `warmup`.
    pub fn bcast_reduce(
        &self,
        nodes: u32,
        bytes: usize,
        iters: usize,
        warmup: usize,
    ) -> Result<Latency, String> {
        let out = self.mpirun(
            nodes,
            &[
                "bcast_reduce",
                &bytes.to_string(),
                &iters.to_string(),
                &warmup.to_string(),
            ],
        )?;
        parse_result(&out)
    }

    /// Round trips of a `bytes` message between two ranks.
    pub fn pingpong(&self, bytes: usize, iters: usize, warmup: usize) -> Result<Latency, String> {
        let out = self.mpirun(
            2,
            &[
                "pingpong",
                &bytes.to_string(),
                &iters.to_string(),
                &warmup.to_string(),
            ],
        )?;
        parse_result(&out)
    }

    /// Runs the reference on `nodes` ranks over TCP on loopback; its stdout.
    fn mpirun(&self, nodes: u32, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("mpirun");
        command
            .args([
                "-np",
                &nodes.to_string(),
                "--oversubscribe",
                "--bind-to",
                "none",
            ])
            .args(["--mca", "pml", "ob1", "--mca", "btl", "tcp,self"])
            .args(["--mca", "btl_tcp_if_include", "lo"])
            .args(["--mca", "oob_tcp_if_include", "lo"])
            .arg(&self.program)
            .args(args)
            // As root, Open MPI wants both; elsewhere they change nothing.
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("running mpirun: {e}"))?;
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
                }
                text
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + MPIRUN_GUARD;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let (out, err) = (
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default(),
        );
        match status {
            Some(status) if status.success() => Ok(out),
            Some(status) => Err(format!(
                "mpirun -np {nodes} failed ({status}): {}",
                first_lines(&err, 4)
            )),
            None => Err(format!(
                "mpirun -np {nodes} took longer than {MPIRUN_GUARD:?} and was killed"
            )),
        }
    }
}

/// The median and p90 from rank 0's `result ...` line.
fn parse_result(out: &str) -> Result<Latency, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with("result "))
        .ok_or_else(|| format!("no result line from the reference: {}", last_lines(out, 3)))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {name} in {line:?}"))
    };
    Ok(Latency {
        median_us: field("median_us=")?,
        p90_us: field("p90_us=")?,
    })
}

/// The first `n` lines of Open MPI's error text that say something (its banners
/// are framed by dashes and end with advice on silencing them).
fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.contains("-quiet"))
        .take(n)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
