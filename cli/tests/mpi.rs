//! herald over MPI (`herald node --transport mpi`, the `mpi` feature) in real
//! `mpirun` jobs: the C plugin scenario, the choice of transport, settings every
//! rank must share, an error text larger than a frame, and what a job shows
//! when a rank dies (Open MPI aborts it) or rank 0's program fails.
//! Also: joins and herald run ranks never taken for MPI jobs.
//! Run by scripts/mpi.sh: `cargo test -p herald --features mpi --test mpi`.
#![cfg(feature = "mpi")]

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use common::{GUARD, build_c, example_plugin, herald};

/// The exit status `timeout` gives a command that ran out of time.
const TIMED_OUT: i32 = 124;

/// What an `mpirun` job printed, and how it ended.
struct MpiJob {
    status: Option<i32>,
    output: String,
}

impl MpiJob {
    fn count(&self, needle: &str) -> usize {
        self.output.matches(needle).count()
    }
}

/// Runs `mpirun -np ranks PROGRAM ARGS` (as root, oversubscribed, shared memory),
/// with Open MPI's variables the only ones telling ranks who they are, each
/// `env` pair exported to the ranks, under a time limit.
fn mpirun(ranks: u32, env: &[(&str, &str)], program: &[OsString]) -> MpiJob {
    let mut command = Command::new("timeout");
    command
        .arg(GUARD.as_secs().to_string())
        .args(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string());
    for (name, value) in env {
        command.arg("-x").arg(format!("{name}={value}"));
    }
    command.args(program);
    for var in [
        "HERALD_RANK",
        "HERALD_SIZE",
        "HERALD_COORDINATOR",
        "HERALD_SECRET",
        "HERALD_SECRET_FILE",
        "HERALD_TRANSPORT",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "PMI_RANK",
        "PMI_SIZE",
        "PMIX_RANK",
    ] {
        command.env_remove(var);
    }
    let output = command.output().expect("run mpirun (install openmpi-bin)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    MpiJob {
        status: output.status.code(),
        output: text,
    }
}

/// `herald -v node FLAGS... --load LIB --main LIB:MAIN --library-path DIR`.
fn node(flags: &[&str], dir: &Path, library: &Path, main: &str) -> Vec<OsString> {
    let mut all: Vec<OsString> = vec![herald().into(), "-v".into(), "node".into()];
    all.extend(flags.iter().map(OsString::from));
    all.extend([
        "--load".into(),
        library.into(),
        "--main".into(),
        format!("{}:{main}", library.display()).into(),
        "--library-path".into(),
        dir.into(),
    ]);
    all
}

#[test]
fn the_c_plugin_scenario_runs_over_mpi_on_four_ranks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let job = mpirun(
        4,
        &[],
        &node(&["--transport", "mpi"], dir.path(), &plugin, "example_main"),
    );
    assert_eq!(job.status, Some(0), "{}", job.output);
    for rank in 0..4 {
        assert!(
            job.output.contains(&format!(
                "rank {rank} of 4, over MPI (herald initialised MPI)"
            )),
            "rank {rank} did not join over MPI:\n{}",
            job.output
        );
        assert_eq!(
            job.count(&format!("node {rank}: example tasks registered")),
            1,
            "node {rank} did not register the plugin exactly once:\n{}",
            job.output
        );
        assert!(
            job.output
                .contains(&format!("node {rank}: example.checksum -> ")),
            "no task ran on node {rank}:\n{}",
            job.output
        );
    }
    assert!(
        job.output.contains("all tasks succeeded on every node"),
        "{}",
        job.output
    );
    // Nobody was declared down at the normal end of the job.
    assert!(!job.output.contains("declared down"), "{}", job.output);
}

#[test]
fn auto_takes_mpi_under_mpirun_and_tcp_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let auto = mpirun(2, &[], &node(&[], dir.path(), &plugin, "example_main"));
    assert_eq!(auto.status, Some(0), "{}", auto.output);
    assert_eq!(auto.count("over MPI"), 2, "{}", auto.output);

    let port = common::free_port().to_string();
    let secret = "ab".repeat(32);
    let tcp = mpirun(
        2,
        &[
            ("HERALD_TRANSPORT", "tcp"),
            ("HERALD_COORDINATOR", &port),
            ("HERALD_SECRET", &secret),
        ],
        &node(&[], dir.path(), &plugin, "example_main"),
    );
    assert_eq!(tcp.status, Some(0), "{}", tcp.output);
    assert_eq!(tcp.count("bootstrap from OpenMpi"), 2, "{}", tcp.output);
    assert_eq!(tcp.count("over MPI"), 0, "{}", tcp.output);
}

#[test]
fn ranks_with_different_fanouts_refuse_to_start_naming_both_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    // Rank 0 uses fan-out 4, rank 1 fan-out 5.
    let script = format!(
        "exec {} node --transport mpi --fanout $((4 + OMPI_COMM_WORLD_RANK)) --load {} \
         --library-path {}",
        herald().display(),
        plugin.display(),
        dir.path().display()
    );
    let job = mpirun(2, &[], &["sh".into(), "-c".into(), script.into()]);
    assert_ne!(job.status, Some(0), "{}", job.output);
    assert_ne!(job.status, Some(TIMED_OUT), "the job hung:\n{}", job.output);
    // Each rank names both values; mpirun may stop one rank before it prints,
    // once the other has exited.
    assert!(
        job.output.contains(
            "node 1 uses fan-out 5, this node 4: start every rank with the same --fanout"
        ) || job.output.contains(
            "node 0 uses fan-out 4, this node 5: start every rank with the same --fanout"
        ),
        "{}",
        job.output
    );
}

#[test]
fn an_error_text_longer_than_a_frame_is_cut_and_the_registration_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(dir.path(), "faults", "faults", "");
    let job = mpirun(
        3,
        &[],
        &node(
            &["--transport", "mpi"],
            dir.path(),
            &library,
            "main_huge_error",
        ),
    );
    assert_eq!(job.status, Some(0), "{}", job.output);
    assert!(
        job.output.contains("names node 1: yes; marked cut: yes"),
        "{}",
        job.output
    );
}

#[test]
fn a_rank_that_dies_ends_the_whole_job_with_an_error_and_nothing_hangs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(dir.path(), "mpi_faults", "mpi_faults", "");
    let job = mpirun(
        4,
        &[],
        &node(&["--transport", "mpi"], dir.path(), &library, "main_die"),
    );
    assert!(job.output.contains("node 2: dying"), "{}", job.output);
    assert_ne!(job.status, Some(TIMED_OUT), "the job hung:\n{}", job.output);
    assert_ne!(job.status, Some(0), "{}", job.output);
    // Open MPI names the rank that died and how.
    assert!(
        job.output.contains("rank 2") && job.output.contains("signal 9"),
        "mpirun did not name the dead rank:\n{}",
        job.output
    );
    // The registration never completed: the job was aborted first.
    assert!(
        !job.output.contains("die registration: rc=0"),
        "{}",
        job.output
    );
}

#[test]
fn rank_zeros_exit_code_is_the_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(dir.path(), "mpi_faults", "mpi_faults", "");
    let job = mpirun(
        3,
        &[],
        &node(
            &["--transport", "mpi"],
            dir.path(),
            &library,
            "main_exit_three",
        ),
    );
    for rank in 0..3 {
        assert!(
            job.output.contains(&format!("node {rank}: noop ran")),
            "{}",
            job.output
        );
    }
    assert_eq!(job.status, Some(3), "{}", job.output);
}

#[test]
fn a_join_under_mpirun_goes_through_rank_zero_over_tcp_not_into_a_fresh_mpi_job() {
    // Nothing listens at the address: the joiner must try it (and fail), never
    // form a job of its own over MPI and exit 0 as if it had served.
    let address = common::free_port().to_string();
    let secret = "ab".repeat(32);
    let herald = herald().into_os_string();
    let join = mpirun(
        1,
        &[("HERALD_SECRET", &secret)],
        &[
            herald.clone(),
            "-v".into(),
            "node".into(),
            "--establish-timeout".into(),
            "1".into(),
            "--join".into(),
            address.clone().into(),
        ],
    );
    assert_ne!(join.status, Some(0), "{}", join.output);
    assert_ne!(
        join.status,
        Some(TIMED_OUT),
        "the job hung:\n{}",
        join.output
    );
    assert!(
        join.output
            .contains(&format!("cannot join the job through {address}")),
        "{}",
        join.output
    );
    assert_eq!(join.count("over MPI"), 0, "{}", join.output);

    // HERALD_JOIN, as herald_init and the Python module read it, does the same.
    let env_join = mpirun(
        1,
        &[("HERALD_SECRET", &secret), ("HERALD_JOIN", &address)],
        &[
            herald.clone(),
            "-v".into(),
            "node".into(),
            "--establish-timeout".into(),
            "1".into(),
        ],
    );
    assert_ne!(env_join.status, Some(0), "{}", env_join.output);
    assert_eq!(env_join.count("over MPI"), 0, "{}", env_join.output);

    // --rank/--size cannot go with an explicit MPI transport.
    let mpi = mpirun(
        1,
        &[],
        &[
            herald,
            "node".into(),
            "--transport".into(),
            "mpi".into(),
            "--rank".into(),
            "0".into(),
            "--size".into(),
            "1".into(),
        ],
    );
    assert_ne!(mpi.status, Some(0), "{}", mpi.output);
    assert!(
        mpi.output
            .contains("--rank/--size describes a job over herald's TCP links"),
        "{}",
        mpi.output
    );
}

#[test]
fn mpi_asked_for_in_ranks_that_herald_run_started_is_refused_not_run_as_separate_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let mut command = Command::new("timeout");
    command
        .arg(GUARD.as_secs().to_string())
        .arg(herald())
        .args(["run", "-n", "2", "--"])
        .args(node(&[], dir.path(), &plugin, "example_main"))
        .env("HERALD_TRANSPORT", "mpi");
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK"] {
        command.env_remove(var);
    }
    let output = command.output().expect("run herald run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert_ne!(output.status.code(), Some(TIMED_OUT), "hung:\n{text}");
    assert!(
        text.contains("the transport is MPI, but HERALD_RANK is set"),
        "{text}"
    );
    // Before: each rank was rank 0 of a job of one, and ran the job's main.
    assert!(!text.contains("over MPI"), "{text}");
}
