//! Joining a job over the job's own MPI (the `mpi` feature): herald-mpi's
//! [`MpiTransport`] as a [`Transport`], with the settings every rank must share
//! checked across ranks as herald-tcp's handshake checks them.

use crossbeam_channel::Receiver;
use herald_mpi::{MpiConfig, MpiTransport, PollConfig};
use herald_tcp::MeshEvent;

pub use herald_mpi::{MPI_Comm, MpiOpener};

use crate::{HostConfig, HostError, Runtime, Transport};

impl Transport for MpiTransport {
    fn send(&self, to: u32, frame: Vec<u8>) {
        MpiTransport::send(self, to, frame);
    }

    fn close_peer(&self, to: u32) {
        MpiTransport::close_peer(self, to);
    }

    fn shutdown(self: Box<Self>) {
        MpiTransport::shutdown(*self);
    }

    fn on_events(&self, hook: herald_tcp::EventHook) -> bool {
        MpiTransport::on_events(self, hook)
    }
}

/// herald's links over MPI, ready for [`Runtime::start_with_transport`]:
/// received frames wait in MPI until [`MpiOpener::open`].
pub struct MpiLinks {
    /// The transport to start the runtime with.
    pub transport: Box<dyn Transport>,
    /// Received frames and lost peers, once opened.
    pub events: Receiver<MeshEvent>,
    /// This process's node id: its rank in the communicator.
    pub node: u32,
    /// The number of nodes: the communicator's size.
    pub nodes: u32,
    /// Starts the delivery of received frames.
    pub opener: MpiOpener,
    /// Whether herald initialised MPI (and finalises it when the runtime shuts down).
    pub initialised_mpi: bool,
}

impl MpiLinks {
    /// Joins over a duplicate of `MPI_COMM_WORLD`, initialising MPI if the
    /// program has not (collective: every rank calls it).
    pub fn join(config: &HostConfig) -> Result<MpiLinks, HostError> {
        MpiLinks::join_with(mpi_config(config))
    }

    /// Joins over a duplicate of `comm`, whose ranks are the job's nodes
    /// (collective over `comm`).
    ///
    /// # Safety
    ///
    /// `comm` must be a valid communicator of this process's MPI library.
    pub unsafe fn join_comm(config: &HostConfig, comm: MPI_Comm) -> Result<MpiLinks, HostError> {
        // SAFETY: the caller vouches for `comm`.
        MpiLinks::join_with(unsafe { mpi_config(config).with_comm(comm) })
    }

    /// Starts the runtime on these links, calls `ready` with it (register
    /// executors, install it for the C ABI), then lets frames in.
    pub fn start(
        self,
        config: HostConfig,
        ready: impl FnOnce(&Runtime),
    ) -> Result<Runtime, HostError> {
        let runtime = Runtime::start_with_transport(
            self.transport,
            self.events,
            self.node,
            self.nodes,
            config,
        )?;
        ready(&runtime);
        self.opener.open();
        Ok(runtime)
    }

    fn join_with(config: MpiConfig) -> Result<MpiLinks, HostError> {
        let (transport, events) = MpiTransport::start(config)
            .map_err(|e| HostError::Start(format!("cannot join the job over MPI: {e}")))?;
        Ok(MpiLinks {
            node: transport.rank(),
            nodes: transport.size(),
            opener: transport.opener(),
            initialised_mpi: transport.initialised_mpi(),
            transport: Box::new(transport),
            events,
        })
    }
}

/// The MPI transport's settings for this runtime: its frame limit, and the
/// protocol version and fan-out compared across ranks (as herald-tcp's links
/// compare them, under the same names).
fn mpi_config(config: &HostConfig) -> MpiConfig {
    let mut mpi = MpiConfig::default();
    mpi.max_frame_bytes = config.max_frame_bytes;
    mpi.poll = PollConfig::from_env();
    mpi.agree = vec![
        (
            "protocol version".into(),
            u64::from(herald_core::WIRE_VERSION),
            "herald build".into(),
        ),
        (
            "fan-out".into(),
            u64::from(config.fanout),
            "--fanout".into(),
        ),
    ];
    mpi
}
