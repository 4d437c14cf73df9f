//! herald-python as a job of one node (no launcher needed): the embedded
//! interpreter, the `herald` module, and exit statuses. The multi-node suites
//! are in python/tests (python/run-tests.sh).

use std::process::{Command, Output};

fn herald_python(args: &[&str]) -> Output {
    herald_python_with(args, &[])
}

/// herald-python with `env` set on top of this process's environment (an empty
/// value removes the variable).
fn herald_python_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald-python"));
    for (name, value) in env {
        if value.is_empty() {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    for variable in [
        "HERALD_RANK",
        "HERALD_SIZE",
        "HERALD_COORDINATOR",
        "HERALD_SECRET",
    ] {
        command.env_remove(variable);
    }
    command.args(args).output().expect("herald-python runs")
}

#[test]
fn a_program_uses_the_herald_module() {
    let output = herald_python(&[
        "-c",
        "import herald, json\n\
         assert herald.num_nodes() == 1 and herald.node_id() == 0\n\
         assert herald.import_global('json') is json\n\
         assert herald.launch(0, len, 'abc').result() == 3\n\
         print('ok')",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn the_exit_status_is_the_programs() {
    assert_eq!(
        herald_python(&["-c", "raise SystemExit(7)"]).status.code(),
        Some(7)
    );
    let failed = herald_python(&[
        "-c",
        "import herald\nherald.import_global('no_such_module_hp')",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("node 0: ModuleNotFoundError: No module named 'no_such_module_hp'"),
        "{stderr}"
    );
}

#[test]
fn the_c_abi_is_exported_for_plugins() {
    // What a ctypes-loaded plugin resolves its herald_* calls against.
    let output = herald_python(&[
        "-c",
        "import ctypes\n\
         me = ctypes.CDLL(None)\n\
         assert me.herald_node_count() == 1 and me.herald_node_id() == 0\n\
         assert me.herald_register_task_local\n",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_standard_library_is_its_own_whatever_path_says() {
    // Debian's python3 (another installation, maybe of the same version) first
    // on PATH used to hand herald-python that installation's standard library.
    let output = herald_python_with(
        &["-c", "import math, sys, sysconfig; print(sys.prefix)"],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("PYTHONHOME", ""),
            ("VIRTUAL_ENV", ""),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let home = env!("HERALD_PYTHON_HOME");
    if !home.is_empty() {
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), home);
    }
}

#[test]
fn a_pythonhome_without_a_standard_library_is_named() {
    let output = herald_python_with(
        &["-c", "print('ran')"],
        &[("PYTHONHOME", "/nonexistent-herald-home")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(home: PYTHONHOME=/nonexistent-herald-home: unset it"),
        "{stderr}"
    );
}

#[test]
fn a_virtualenv_of_another_python_is_refused_by_name() {
    let venv = std::env::temp_dir().join(format!("hp-venv-{}", std::process::id()));
    std::fs::create_dir_all(&venv).expect("temporary directory");
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /nowhere/bin\nversion = 2.7.18\n",
    )
    .expect("pyvenv.cfg written");
    let venv_text = venv.to_string_lossy().into_owned();
    let output = herald_python_with(&["-c", "print('ran')"], &[("VIRTUAL_ENV", &venv_text)]);
    let _ = std::fs::remove_dir_all(&venv);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
    assert!(
        stderr.contains("is for Python 2.7, but herald-python embeds Python 3."),
        "{stderr}"
    );
}
