//! Native loading in one process: a plain C plugin whose constructor registers
//! its tasks globally, lazy task variants, refusals (outside the allowed
//! directories, digest mismatch, unregistered task), the deadlock guard, and a
//! load inside a callback that does not wait for what encloses the callback.
//!
//! The C ABI goes through the process-global runtime, so everything runs in one
//! test function, in order.

mod common;

use std::sync::Arc;

use herald_host::{HostConfig, HostError, LoadError, Runtime, TaskCode, TaskVariant};

const DEADLOCK_PLUGIN: &str = r#"
#include "herald.h"
int deadlock_code = -1;
char deadlock_text[256];
int noop(const void *a, size_t n) { (void)a; (void)n; return 0; }
__attribute__((constructor)) static void init(void) {
    herald_handle h = herald_register_global(noop, "x", 1, NULL);
    deadlock_code = herald_wait(h, deadlock_text, sizeof deadlock_text);
    herald_release(h);
}
"#;

/// A callback that loads the library named by its argument bytes.
const LOADING_CALLBACK: &str = r#"
#include <string.h>
#include "herald.h"
int load_code = -1;
char load_text[512];
int load_inside(const void *args, size_t len) {
    char path[4096];
    if (len >= sizeof path) return 1;
    memcpy(path, args, len);
    path[len] = 0;
    load_code = herald_load_library(path, load_text, sizeof load_text);
    return 0;
}
"#;

/// A constructor registering with the tag of the callback that loads it: the
/// registration encloses the invocation that loads the library.
const ENCLOSING_PLUGIN: &str = r#"
#include "herald.h"
int enclosing_noop(const void *a, size_t n) { (void)a; (void)n; return 0; }
HERALD_REGISTER_ON_LOAD(enclosing_noop, 0, 0, "load-inside")
"#;

const FAILING_PLUGIN: &str = r#"
#include "herald.h"
int refuse(const void *a, size_t n) { (void)a; (void)n; herald_set_error("refused on purpose"); return 7; }
HERALD_REGISTER_ON_LOAD(refuse, 0, 0, "failing-plugin")
"#;

const STRAY_CALLBACK: &str =
    "int stray_callback(const void *a, unsigned long n) { (void)a; (void)n; return 0; }";

/// A plugin whose constructor registers a function of another library, found
/// with plain dlopen at `STRAY_PATH`.
const REFERRER_PLUGIN: &str = r#"
#include <dlfcn.h>
#include "herald.h"
__attribute__((constructor)) static void init(void) {
    void *stray = dlopen(STRAY_PATH, RTLD_NOW);
    herald_callback callback = stray ? (herald_callback)dlsym(stray, "stray_callback") : 0;
    if (callback) herald_register_on_load(callback, 0, 0, 0);
}
"#;

const VERSION_A: &str =
    "int version(const void *a, unsigned long n, void *o) { (void)a; (void)n; (void)o; return 0; }";
const VERSION_B: &str = "int version(const void *a, unsigned long n, void *o) { (void)a; (void)n; (void)o; return 1; } int padding[100];";

#[test]
fn c_plugins_in_one_process() {
    // Every function herald.h declares is in the table that keeps it exported,
    // and this executable exports it under that name (what plugins resolve).
    assert_eq!(herald_host::keep_c_abi(), header_functions().len() + 1);
    let this = libloading::os::unix::Library::this();
    for name in header_functions() {
        let symbol = format!("{name}\0");
        // SAFETY: only the symbol's presence is checked; it is never called.
        let found = unsafe { this.get::<*const std::ffi::c_void>(symbol.as_bytes()) };
        assert!(
            found.is_ok(),
            "herald.h declares {name}, which is not exported"
        );
    }
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        library_dirs: vec![allowed.path().to_path_buf()],
        ..HostConfig::default()
    };
    let runtime = Runtime::single_process(config).expect("start");
    herald_host::install_global(&runtime);

    // The constructor registers a callback globally; the callback registers
    // three tasks (nested); load_library waits for it at the safe point.
    let plugin =
        common::build_c_library(allowed.path(), "example", &common::example_plugin_source());
    let report = runtime
        .load_library(&plugin)
        .expect("load the example plugin");
    assert_eq!(report.registrations.len(), 1, "{report:?}");
    assert_eq!(runtime.registered_tasks(), 3);
    let reversed = runtime.launch(0, "example.reverse", b"abc".to_vec()).wait();
    assert_eq!(reversed.expect("reverse"), b"cba");
    let words = runtime
        .launch(0, "example.wordcount", b" a bb  c ".to_vec())
        .wait();
    assert_eq!(words.expect("wordcount"), b"3");
    // Loading it again is a no-op: the constructor does not run twice.
    runtime.load_library(&plugin).expect("second load");
    assert_eq!(
        runtime.stats().invocations,
        2,
        "callback + task batch, once each"
    );

    // Fire and forget: a released task handle is gone (waiting on it is an
    // error), and the runtime keeps serving launches.
    let task = c"example.reverse";
    // SAFETY: a C string and two readable argument bytes.
    let launched =
        unsafe { herald_host::ffi::herald_launch(0, task.as_ptr(), b"xy".as_ptr().cast(), 2) };
    assert_ne!(launched, 0);
    herald_host::ffi::herald_task_release(launched);
    let (mut bytes, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: valid out-pointers; a null error buffer of length 0 is allowed.
    let code = unsafe {
        herald_host::ffi::herald_task_wait(launched, &mut bytes, &mut len, std::ptr::null_mut(), 0)
    };
    assert_eq!(
        code,
        herald_host::ffi::HERALD_ERR_INVALID,
        "released handles are gone"
    );
    let again = runtime.launch(0, "example.reverse", b"xy".to_vec()).wait();
    assert_eq!(again.expect("reverse"), b"yx");

    // A function of the main program cannot be named for other nodes.
    extern "C" fn local_only() {}
    match runtime.register_callback(local_only as *const std::ffi::c_void, vec![], None) {
        Err(HostError::NotExported { reason, .. }) => {
            assert!(reason.contains("main program"), "{reason}")
        }
        other => panic!("expected NotExported, got {other:?}"),
    }

    // An unregistered task is a clear error, not a hang.
    let missing = runtime.launch(0, "no.such.task", vec![]).wait();
    let text = missing.expect_err("unregistered").to_string();
    assert!(
        text.contains("task 'no.such.task' is not registered on node 0"),
        "{text}"
    );

    // A constructor that waits gets WOULD_DEADLOCK instead of hanging.
    let deadlock = common::build_c_library(allowed.path(), "deadlock", DEADLOCK_PLUGIN);
    runtime.load_library(&deadlock).expect("load");
    // SAFETY: herald has loaded this library already; reopening it runs no
    // constructor again and only takes another reference.
    let library = unsafe { libloading::Library::new(&deadlock) }.expect("reopen");
    // SAFETY: `deadlock_code` is an `int` the test library defines; it is read
    // once its constructor, the only writer, has returned.
    let code = unsafe {
        **library
            .get::<*const i32>(b"deadlock_code\0")
            .expect("symbol")
    };
    assert_eq!(code, herald_host::ffi::HERALD_ERR_WOULD_DEADLOCK);

    // A callback loads a library whose constructor registers the callback's own
    // registration (its tag): that one finishes only after the callback
    // returns, so the load does not wait for it, and succeeds.
    let loader = common::build_c_library(allowed.path(), "loader", LOADING_CALLBACK);
    let enclosing = common::build_c_library(allowed.path(), "enclosing", ENCLOSING_PLUGIN);
    runtime.load_library(&loader).expect("load");
    // SAFETY: herald has loaded this library already; reopening it runs no
    // constructor again and only takes another reference.
    let library = unsafe { libloading::Library::new(&loader) }.expect("reopen");
    // SAFETY: only the address of the exported function is taken.
    let function = unsafe {
        *library
            .get::<*const std::ffi::c_void>(b"load_inside\0")
            .expect("symbol")
    };
    let path = enclosing.to_str().expect("UTF-8 path").as_bytes().to_vec();
    let result = runtime
        .register_callback(function, path, Some("load-inside".into()))
        .expect("register")
        .wait()
        .expect("the callback's registration completes");
    assert!(result.is_ok(), "{result}");
    // SAFETY: `load_code` is an `int` the test library defines; its only writer,
    // the callback, has returned.
    let code = unsafe { **library.get::<*const i32>(b"load_code\0").expect("symbol") };
    assert_eq!(
        code,
        herald_host::ffi::HERALD_OK,
        "load inside the callback"
    );

    // Outside the allowed directories: refused before anything is loaded.
    let stray = common::build_c_library(outside.path(), "stray", VERSION_A);
    match runtime.load_library(&stray) {
        Err(HostError::Load(LoadError::NotAllowed { .. })) => {}
        other => panic!("expected NotAllowed, got {other:?}"),
    }

    // A lazy variant whose file changes before its first run: digest mismatch.
    let lazy = common::build_c_library(allowed.path(), "lazy", VERSION_A);
    let library = runtime.library_ref(&lazy).expect("reference");
    let variant = TaskVariant {
        name: "lazy.version".into(),
        code: TaskCode::Native {
            library: Arc::clone(&library),
            symbol: "version".into(),
        },
    };
    let _ = runtime
        .register_task(variant)
        .expect("register")
        .wait()
        .expect("registered");
    let other = tempfile::tempdir().expect("tempdir");
    let replacement = common::build_c_library(other.path(), "lazy", VERSION_B);
    std::fs::rename(&replacement, &lazy).expect("swap the file");
    let text = runtime
        .launch(0, "lazy.version", vec![])
        .wait()
        .expect_err("mismatch")
        .to_string();
    assert!(
        text.contains("differs from the one the registration names"),
        "{text}"
    );

    // A failing callback fails the load, naming the node and the reason.
    let failing = common::build_c_library(allowed.path(), "failing", FAILING_PLUGIN);
    let text = runtime
        .load_library(&failing)
        .expect_err("fails")
        .to_string();
    assert!(
        text.contains("node 0") && text.contains("refused on purpose"),
        "{text}"
    );

    // It failed here too, so the launcher does not have it either: later
    // launches do not wait for it.
    let again = runtime.launch(0, "example.reverse", b"xy".to_vec()).wait();
    assert_eq!(again.expect("reverse"), b"yx");
    // A constructor that registers a function of a library outside the allowed
    // directories (loaded with plain dlopen): refused when registered, and the
    // load around it fails, naming that library; inside an invocation (a load
    // on every node), the invocation fails on this node.
    let stray = common::build_c_library(outside.path(), "stray", STRAY_CALLBACK);
    let stray = stray.canonicalize().expect("canonical");
    let referrer_source = format!(
        "#define STRAY_PATH \"{}\"\n{REFERRER_PLUGIN}",
        stray.display()
    );
    let referrer = common::build_c_library(allowed.path(), "referrer", &referrer_source);
    let wanted = format!(
        "library {} is outside the allowed directories",
        stray.display()
    );
    let text = runtime
        .load_library(&referrer)
        .expect_err("refused")
        .to_string();
    assert!(text.contains(&wanted), "{text}");
    let everywhere = common::build_c_library(allowed.path(), "referrer2", &referrer_source);
    let text = runtime
        .load_library_everywhere(&everywhere)
        .expect_err("refused")
        .to_string();
    assert!(text.contains(&format!("node 0: {wanted}")), "{text}");

    herald_host::uninstall_global();
    runtime.shutdown();
}

/// The functions declared in include/herald.h: lines that start with a return type
/// followed by a `herald_` name.
fn header_functions() -> Vec<String> {
    let header = include_str!("../../include/herald.h");
    let types = ["int ", "void ", "herald_handle ", "uint32_t "];
    let mut names: Vec<String> = header
        .lines()
        .filter_map(|line| types.iter().find_map(|t| line.strip_prefix(t)))
        .filter_map(|rest| rest.trim_start_matches('*').split('(').next())
        .filter(|name| name.starts_with("herald_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}
