//! Loading exactly what was checked, on real processes: two builds swapped at
//! one path during loads, dependencies outside the allowed directories or
//! differing between nodes, and the default directories of a rank started in `/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Job, RankSetup, args, build_c};

/// Libraries loaded one after the other while a thread of this test keeps
/// swapping two builds at each of their paths.
const SWAP_LIBRARIES: usize = 120;

/// Rank 0 loads 120 libraries while this test swaps build A and build B at each
/// path, as fast as it can. Every load either succeeds — and then every node
/// ran the same build of that library, once — or fails naming the nodes that
/// refused and the path (never the loading node, which runs what it hashed,
/// even for the registration its constructor makes). Never success with
/// different builds.
#[test]
fn builds_swapped_during_loads_never_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let libs = dir.path().join("libs");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&libs).expect("mkdir");
    std::fs::create_dir_all(&store).expect("mkdir");
    let driver = build_c(dir.path(), "driver", "driver", "");
    let builds = [b'A', b'B'].map(|build| {
        let output = dir.path().join(format!("libswap_{}.so", build as char));
        compile("swap", &output, &[&format!("-DBUILD='{}'", build as char)]);
        std::fs::read(&output).expect("read build")
    });
    // One copy of each build per library, its marker patched with its number.
    let mut copies = Vec::new();
    for i in 0..SWAP_LIBRARIES {
        let pair = builds.each_ref().map(|bytes| patch_marker(bytes, i));
        let [a, b] = ["a", "b"].map(|build| store.join(format!("{build}_{i:03}.so")));
        std::fs::write(&a, &pair[0]).expect("write copy");
        std::fs::write(&b, &pair[1]).expect("write copy");
        std::fs::hard_link(&a, libs.join(format!("libswap_{i:03}.so"))).expect("link");
        copies.push([a, b]);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, libs) = (Arc::clone(&stop), Arc::clone(&swaps), libs.clone());
        std::thread::spawn(move || {
            let mut turn = 1;
            while !stop.load(Ordering::Relaxed) {
                for (i, pair) in copies.iter().enumerate() {
                    let staged = libs.join(format!(".staged_{i:03}"));
                    let _ = std::fs::remove_file(&staged);
                    std::fs::hard_link(&pair[turn], &staged).expect("stage");
                    std::fs::rename(&staged, libs.join(format!("libswap_{i:03}.so")))
                        .expect("swap");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                turn = 1 - turn;
            }
        })
    };

    let main = format!("{}:main_swap_loads", driver.display());
    let mut job = Job::start(3, |_| RankSetup {
        args: args([
            &"--load",
            &driver,
            &"--main",
            &main,
            &"--library-path",
            &dir.path(),
        ]),
        env: vec![
            ("SWAP_DIR".into(), libs.display().to_string()),
            ("SWAP_COUNT".into(), SWAP_LIBRARIES.to_string()),
        ],
    });
    let statuses = job.wait();
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");

    // lib -> node -> builds it ran
    let mut ran: BTreeMap<String, BTreeMap<u32, Vec<String>>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    for line in transcript.lines() {
        if let Some(rest) = line.split("swap-ran lib=").nth(1) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let build = fields[1].trim_start_matches("build=").to_owned();
            let node: u32 = fields[2].trim_start_matches("node=").parse().expect("node");
            ran.entry(fields[0].to_owned())
                .or_default()
                .entry(node)
                .or_default()
                .push(build);
        } else if let Some(rest) = line.split("swap-load lib=").nth(1) {
            let (lib, outcome) = rest.split_once(' ').expect("outcome");
            outcomes.insert(lib.to_owned(), outcome.to_owned());
        }
    }
    assert_eq!(outcomes.len(), SWAP_LIBRARIES, "{transcript}");
    let mut succeeded = 0;
    for (lib, outcome) in &outcomes {
        let path = libs.join(format!("libswap_{lib}.so"));
        if outcome == "ok" {
            succeeded += 1;
            let nodes = ran.get(lib).cloned().unwrap_or_default();
            let all: BTreeSet<&String> = nodes.values().flatten().collect();
            assert_eq!(nodes.len(), 3, "library {lib} reported ok\n{transcript}");
            assert!(
                nodes.values().all(|builds| builds.len() == 1) && all.len() == 1,
                "library {lib} reported ok but its nodes ran {nodes:?}\n{transcript}"
            );
        } else {
            assert!(
                outcome.contains(&path.display().to_string())
                    && (outcome.contains("node 1:") || outcome.contains("node 2:"))
                    && !outcome.contains("node 0:"),
                "library {lib}: {outcome}\n{transcript}"
            );
        }
    }
    let swaps = swaps.load(Ordering::Relaxed);
    assert!(
        swaps >= SWAP_LIBRARIES as u64,
        "only {swaps} swaps during the job"
    );
    println!(
        "{} loads during {swaps} swaps: {succeeded} succeeded with one build on every node, {} were refused by name",
        SWAP_LIBRARIES,
        SWAP_LIBRARIES - succeeded
    );
}

/// Build A's constructor renames build B over its own path during its load on
/// node 0, then registers globally. Node 0 runs build A (the file it hashed),
/// for the registration as for the load; nodes 1 and 2 find build B at the path
/// and refuse it by digest; the error names them, not node 0; build B runs nowhere.
#[test]
fn a_constructor_that_swaps_its_own_file_is_refused_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("libselfswap.so");
    let replacement = dir.path().join("libselfswap.next");
    compile("selfswap", &library, &["-DBUILD='A'"]);
    compile("selfswap", &replacement, &["-DBUILD='B'"]);
    let mut job = Job::start(3, |_| RankSetup {
        args: args([&"--library-path", &dir.path(), &"--load", &library]),
        env: vec![
            ("SELFSWAP_FROM".into(), replacement.display().to_string()),
            ("SELFSWAP_TO".into(), library.display().to_string()),
        ],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[0].success(), "{transcript}");
    let path = library.canonicalize().expect("canonical");
    for node in [1, 2] {
        let wanted = format!("node {node}: library {} differs", path.display());
        assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    }
    assert!(!transcript.contains("node 0: library"), "{transcript}");
    assert_eq!(
        transcript.matches("selfswap build=A node=0").count(),
        1,
        "{transcript}"
    );
    assert!(!transcript.contains("selfswap build=B"), "{transcript}");
}

/// Lazy task variants of a library that node 1 does not allow: the registration
/// fails when it is made (here: awaited by the load), naming node 1, the task
/// and the library, not at the task's first launch.
#[test]
fn lazy_tasks_of_a_library_another_node_refuses_fail_at_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("libtasks_only.so");
    compile("tasks_only", &library, &[]);
    let mut job = Job::start(2, |rank| RankSetup {
        args: if rank == 0 {
            args([&"--library-path", &dir.path(), &"--load", &library])
        } else {
            args([&"--library-path", &elsewhere.path()])
        },
        env: vec![],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[0].success(), "{transcript}");
    let wanted = format!(
        "node 1: task 'tasks_only.echo' cannot run on node 1: library {} is outside the allowed",
        library.canonicalize().expect("canonical").display()
    );
    assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    assert!(
        transcript.contains("registration of task 'tasks_only.echo' failed"),
        "{transcript}"
    );
}

/// A library in an allowed directory whose rpath points at a dependency outside
/// the allowed and system directories: the load is refused before anything is
/// loaded — the dependency's constructor runs nowhere — and the error names
/// the dependency's file.
#[test]
fn rpath_dependency_outside_the_allowed_directories_is_refused() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("constructor-ran");
    let evil = outside.path().join("libevil.so");
    compile("evil", &evil, &["-Wl,-soname,libevil.so"]);
    let main = allowed.path().join("libuses_evil.so");
    let rpath = format!("-Wl,-rpath,{}", outside.path().display());
    let link_dir = format!("-L{}", outside.path().display());
    compile("uses_evil", &main, &[&rpath, &link_dir, "-levil"]);
    let mut job = Job::start(2, |_| RankSetup {
        args: args([&"--load", &main, &"--library-path", &allowed.path()]),
        env: vec![("EVIL_MARKER".into(), marker.display().to_string())],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[0].success(), "{transcript}");
    let evil = evil.canonicalize().expect("canonical");
    let wanted = format!(
        "depends on {}, which is outside the allowed",
        evil.display()
    );
    assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    assert!(!transcript.contains("evil constructor ran"), "{transcript}");
    assert!(!marker.exists(), "the dependency's constructor ran");
}

/// Every node allows both directories, but the loader resolves the library's
/// dependency to another file on nodes 1 and 2 (their LD_LIBRARY_PATH differs):
/// they refuse, and the load's error names them and the dependency's file.
#[test]
fn a_dependency_that_differs_on_a_node_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [here, there] = ["here", "there"].map(|name| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    });
    for (place, value) in [(&here, 1), (&there, 2)] {
        let output = place.join("libdep.so");
        compile(
            "dep",
            &output,
            &["-Wl,-soname,libdep.so", &format!("-DDEP_VALUE={value}")],
        );
    }
    let main = dir.path().join("libuses_dep.so");
    let link_dir = format!("-L{}", here.display());
    compile("uses_dep", &main, &[&link_dir, "-ldep"]);
    let mut job = Job::start(3, |rank| RankSetup {
        args: args([&"--load", &main, &"--library-path", &dir.path()]),
        env: vec![(
            "LD_LIBRARY_PATH".into(),
            if rank == 0 { &here } else { &there }.display().to_string(),
        )],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[0].success(), "{transcript}");
    let dependency = here.join("libdep.so").canonicalize().expect("canonical");
    for node in [1, 2] {
        let wanted = format!(
            "node {node}: library {}: its dependency {} does not match",
            main.canonicalize().expect("canonical").display(),
            dependency.display()
        );
        assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    }
    assert_eq!(
        transcript.matches("dep constructor value=1").count(),
        1,
        "{transcript}"
    );
    assert!(
        !transcript.contains("dep constructor value=2"),
        "{transcript}"
    );
}

/// A rank started in `/` (as daemons and containers start) does not allow every
/// file: the working directory is not allowed implicitly when it is `/`. The
/// same library loads once its directory is named in HERALD_LIBRARY_PATH, which
/// adds to the defaults.
#[test]
fn a_rank_started_in_the_root_directory_allows_nothing_implicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(dir.path(), "nest", "nest", "");
    let run = |library_path: Option<&Path>| {
        let mut command = Command::new(common::herald());
        command
            .current_dir("/")
            .env_remove("HERALD_LIBRARY_PATH")
            .args(["run", "-n", "2", "--"])
            .arg(common::herald())
            .arg("node")
            .arg("--load")
            .arg(&library);
        if let Some(path) = library_path {
            command.env("HERALD_LIBRARY_PATH", path);
        }
        command.output().expect("herald run")
    };
    let refused = run(None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    let wanted = format!(
        "library {} is outside the allowed directories",
        library.canonicalize().expect("canonical").display()
    );
    assert!(text.contains(&wanted), "{wanted}\n{text}");
    assert!(
        text.contains("to HERALD_LIBRARY_PATH on every node (or pass --library-path"),
        "{text}"
    );
    assert!(!text.contains("inner ran"), "{text}");

    let allowed = run(Some(dir.path()));
    let text = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{text}");
    assert_eq!(text.matches("inner ran").count(), 2, "{text}");
}

/// A rank started in a private directory allows it implicitly, but not once
/// anyone may write to it: rank 0's main (loaded from there) makes it writable
/// by anyone mid-job, then registers a task of its own library. Every node
/// refuses the library, naming it, and the task runs nowhere.
#[test]
fn a_working_directory_that_becomes_writable_by_anyone_allows_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 700");
    let library = build_c(dir.path(), "writable", "writable", "");
    let main = format!("{}:writable_main", library.display());
    let output = Command::new(common::herald())
        .current_dir(dir.path())
        .env_remove("HERALD_LIBRARY_PATH")
        .env("WRITABLE_DIR", dir.path())
        .args(["run", "-n", "2", "--"])
        .arg(common::herald())
        .args(["node", "--load"])
        .arg(&library)
        .arg("--main")
        .arg(&main)
        .output()
        .expect("herald run");
    // Let the tempdir be removed as usual.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 700");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("registration failed"), "{text}");
    assert!(text.contains("writable by anyone"), "{text}");
    assert!(!text.contains("task ran"), "{text}");
}

/// Compiles `cli/tests/c/{name}.c` into `output` with `cc -shared -fPIC` and
/// extra flags (after the source, so libraries can follow it).
fn compile(name: &str, output: &Path, flags: &[&str]) {
    let source = common::repo_root().join(format!("cli/tests/c/{name}.c"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(output)
        .arg("-I")
        .arg(common::repo_root().join("include"))
        .arg(&source)
        .args(flags)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
}

/// `bytes` with the digits after `SWAPIDX=` replaced by `index`.
fn patch_marker(bytes: &[u8], index: usize) -> Vec<u8> {
    let marker = b"SWAPIDX=000";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in the build");
    let mut out = bytes.to_vec();
    out[at + 8..at + 11].copy_from_slice(format!("{index:03}").as_bytes());
    out
}
