//! Writes `pkgconfig/herald.pc` next to `libherald.so` (in `target/<profile>/`),
//! so that C programs build against the library the usual way:
//!
//! ```sh
//! PKG_CONFIG_PATH=$PWD/target/release/pkgconfig cc app.c $(pkg-config --cflags --libs herald)
//! ```
//!
//! The headers are the workspace's `include/`; `Libs` carries an rpath to the
//! library's directory, so programs run without `LD_LIBRARY_PATH`.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let include = manifest_dir
        .parent()
        .map(|workspace| workspace.join("include"))
        .unwrap_or_else(|| fail("capi/ has no parent directory"));
    // OUT_DIR is <target>/<profile>/build/herald-c-<hash>/out: the library goes
    // to <target>/<profile>.
    let out_dir = PathBuf::from(env_var("OUT_DIR"));
    let lib_dir = out_dir
        .ancestors()
        .nth(3)
        .unwrap_or_else(|| fail("OUT_DIR is not inside a cargo target directory"));
    let pc = pkg_config_file(&include, lib_dir, &env_var("CARGO_PKG_VERSION"));
    let pc_dir = lib_dir.join("pkgconfig");
    if let Err(error) =
        std::fs::create_dir_all(&pc_dir).and_then(|()| std::fs::write(pc_dir.join("herald.pc"), pc))
    {
        fail(&format!(
            "cannot write {}/herald.pc: {error}",
            pc_dir.display()
        ));
    }
}

fn pkg_config_file(include: &Path, lib_dir: &Path, version: &str) -> String {
    format!(
        "# Written by capi/build.rs for this build of herald.\n\
         includedir={include}\n\
         libdir={lib}\n\
         \n\
         Name: herald\n\
         Description: make dynamically loaded code exist on every node of a distributed job\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lherald\n",
        include = include.display(),
        lib = lib_dir.display(),
    )
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    eprintln!("herald-c build script: {message}");
    std::process::exit(1);
}
