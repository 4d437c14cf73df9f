//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (for `include/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Compiles C `source` into `dir/lib{name}.so` with plain `cc -shared -fPIC`.
pub fn build_c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).expect("write C source");
    let output = dir.join(format!("lib{name}.so"));
    let include = repo_root().join("include");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&output)
        .arg("-I")
        .arg(&include)
        .arg(&source_path)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    output
}

/// The example plugin's source.
pub fn example_plugin_source() -> String {
    std::fs::read_to_string(repo_root().join("examples/c-plugin/plugin.c"))
        .expect("read examples/c-plugin/plugin.c")
}
