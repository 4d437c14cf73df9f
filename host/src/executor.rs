//! [`Executor`]: how an embedder adds its own kinds of code reference.

/// Runs code references of one kind, named by [`CodeRef::Custom`](crate::CodeRef::Custom)
/// and [`TaskCode::Custom`](crate::TaskCode::Custom). Register one per kind on every
/// node with [`Runtime::register_executor`](crate::Runtime::register_executor).
///
/// Both methods run on a worker thread with the current invocation set, so a
/// registration made from inside them (for example by a module being imported)
/// is nested and never blocks.
///
/// ```
/// use herald_host::{CodeRef, Executor, HostConfig, Runtime};
/// use std::sync::Arc;
///
/// struct Echo;
/// impl Executor for Echo {
///     fn invoke(&self, payload: &[u8], _args: &[u8]) -> Result<(), String> {
///         if payload == b"bad" { Err("refused".into()) } else { Ok(()) }
///     }
/// }
/// let runtime = Runtime::single_process(HostConfig::default())?;
/// runtime.register_executor("echo", Arc::new(Echo));
/// let code = CodeRef::Custom { kind: "echo".into(), payload: b"hello".to_vec() };
/// runtime.register_global(code, vec![], None).wait()?;
/// runtime.shutdown();
/// # Ok::<(), herald_host::HostError>(())
/// ```
pub trait Executor: Send + Sync + 'static {
    /// Runs a global registration's code on this node, once.
    fn invoke(&self, payload: &[u8], args: &[u8]) -> Result<(), String>;

    /// Runs a task implemented by this executor and returns its result bytes.
    fn run_task(&self, payload: &[u8], args: &[u8]) -> Result<Vec<u8>, String> {
        let _ = (payload, args);
        Err("this executor does not run tasks".into())
    }
}
