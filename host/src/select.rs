//! Which links a node uses: herald-tcp's mesh, or the job's own MPI
//! (`--transport mpi|tcp|auto`, `HERALD_TRANSPORT`).

use std::str::FromStr;

use crate::error::HostError;

/// Environment variable choosing the transport: `auto` (default), `mpi` or `tcp`.
pub const TRANSPORT_ENV: &str = "HERALD_TRANSPORT";

/// Whether this build of herald can use MPI (the `mpi` cargo feature).
pub const MPI_SUPPORT: bool = cfg!(feature = "mpi");

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportChoice {
    /// MPI when the process runs under an MPI launcher (and not under `herald
    /// run`, whose `HERALD_RANK` wins as it does in the bootstrap, nor with
    /// `HERALD_JOIN`, which joins a running job over TCP) and this build
    /// supports MPI, TCP otherwise.
    #[default]
    Auto,
    /// herald-tcp's authenticated mesh.
    Tcp,
    /// The job's MPI (a duplicated communicator).
    Mpi,
}

/// The transport a node ends up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// herald-tcp.
    Tcp,
    /// MPI.
    Mpi,
}

/// Variables that MPI launchers (not `herald run`, not a plain `srun`) set:
/// Open MPI's `mpirun`, PMI-1/PMI-2 (MPICH, Intel MPI, `srun --mpi=pmi2`) and
/// PMIx (`srun --mpi=pmix`, PRRTE).
const MPI_LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK"];

impl FromStr for TransportChoice {
    type Err = HostError;

    fn from_str(text: &str) -> Result<Self, HostError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(TransportChoice::Auto),
            "tcp" => Ok(TransportChoice::Tcp),
            "mpi" => Ok(TransportChoice::Mpi),
            other => Err(HostError::Start(format!(
                "unknown transport {other:?}: use mpi, tcp or auto (--transport or {TRANSPORT_ENV})"
            ))),
        }
    }
}

impl TransportChoice {
    /// The choice `HERALD_TRANSPORT` makes (auto when unset).
    pub fn from_env() -> Result<TransportChoice, HostError> {
        std::env::var(TRANSPORT_ENV).map_or(Ok(TransportChoice::Auto), |value| value.parse())
    }

    /// The transport to use, given the process's environment.
    pub fn resolve(self) -> Result<TransportKind, HostError> {
        self.resolve_with(&|name| std::env::var_os(name).is_some())
    }

    /// [`resolve`](Self::resolve) with `has_var` saying which variables are set.
    pub fn resolve_with(self, has_var: &dyn Fn(&str) -> bool) -> Result<TransportKind, HostError> {
        match self {
            TransportChoice::Tcp => Ok(TransportKind::Tcp),
            // Ranks that `herald run` started are not MPI processes: over MPI each
            // would be a job of one of its own, and every one of them rank 0.
            TransportChoice::Mpi if MPI_SUPPORT && has_var("HERALD_RANK") => Err(HostError::Start(
                "the transport is MPI, but HERALD_RANK is set: this process is a rank of a \
                     job over herald's TCP links (`herald run` or the environment), which MPI \
                     does not know, so every rank would be rank 0 of a job of its own; start \
                     the job with mpirun or srun for MPI, or unset HERALD_TRANSPORT (or use \
                     --transport tcp)"
                    .into(),
            )),
            TransportChoice::Mpi if MPI_SUPPORT => Ok(TransportKind::Mpi),
            TransportChoice::Mpi => Err(HostError::Start(
                "this herald was built without MPI support: rebuild it with the `mpi` cargo \
                 feature (`cargo build --release --features herald/mpi,herald-c/mpi` for herald \
                 node and libherald.so; for the Python package MATURIN_PEP517_ARGS=\"--features \
                 extension-module,mpi --auditwheel skip\" pip install ./pyhost), or use \
                 --transport tcp / HERALD_TRANSPORT=tcp"
                    .into(),
            )),
            TransportChoice::Auto if MPI_SUPPORT && under_mpi_launcher(has_var) => {
                Ok(TransportKind::Mpi)
            }
            TransportChoice::Auto => Ok(TransportKind::Tcp),
        }
    }
}

/// Whether an MPI launcher started this process, and no herald launcher inside
/// it (`herald run` started from a rank of an `mpirun` job passes Open MPI's
/// variables on, but its ranks are not MPI processes), and the process is not
/// asked to join a running job (`HERALD_JOIN`: joins go through rank 0 over TCP,
/// e.g. joiners that `mpirun` starts).
fn under_mpi_launcher(has_var: &dyn Fn(&str) -> bool) -> bool {
    MPI_LAUNCHER_VARS.iter().any(|var| has_var(var))
        && !has_var("HERALD_RANK")
        && !has_var(crate::JOIN_ENV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_choices_and_refuses_others_naming_them() {
        assert_eq!(
            "MPI".parse::<TransportChoice>().ok(),
            Some(TransportChoice::Mpi)
        );
        assert_eq!(
            " tcp".parse::<TransportChoice>().ok(),
            Some(TransportChoice::Tcp)
        );
        assert_eq!(
            "auto".parse::<TransportChoice>().ok(),
            Some(TransportChoice::Auto)
        );
        let error = "ib"
            .parse::<TransportChoice>()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"ib\"") && error.contains("mpi, tcp or auto"),
            "{error}"
        );
    }

    #[test]
    fn auto_takes_mpi_only_under_an_mpi_launcher_in_an_mpi_build() {
        let mpirun = |var: &str| var == "OMPI_COMM_WORLD_SIZE";
        let herald_run = |var: &str| var == "HERALD_RANK";
        let herald_run_inside_mpirun = |var: &str| var == "HERALD_RANK" || mpirun(var);
        let joiner_under_mpirun = |var: &str| var == "HERALD_JOIN" || mpirun(var);
        let slurm_pmix = |var: &str| var == "PMIX_RANK" || var == "SLURM_PROCID";
        let auto = TransportChoice::Auto;
        let expected = if MPI_SUPPORT {
            TransportKind::Mpi
        } else {
            TransportKind::Tcp
        };
        assert_eq!(auto.resolve_with(&mpirun).ok(), Some(expected));
        assert_eq!(auto.resolve_with(&slurm_pmix).ok(), Some(expected));
        assert_eq!(
            auto.resolve_with(&herald_run).ok(),
            Some(TransportKind::Tcp)
        );
        assert_eq!(
            auto.resolve_with(&herald_run_inside_mpirun).ok(),
            Some(TransportKind::Tcp)
        );
        assert_eq!(
            auto.resolve_with(&joiner_under_mpirun).ok(),
            Some(TransportKind::Tcp)
        );
        assert_eq!(
            TransportChoice::Tcp.resolve_with(&mpirun).ok(),
            Some(TransportKind::Tcp)
        );
        let mpi = TransportChoice::Mpi.resolve_with(&herald_run);
        if MPI_SUPPORT {
            let error = mpi.map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("HERALD_RANK is set"), "{error}");
            assert_eq!(
                TransportChoice::Mpi.resolve_with(&mpirun).ok(),
                Some(TransportKind::Mpi)
            );
        } else {
            let error = mpi.map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("without MPI support"), "{error}");
            // How to rebuild each of herald node, libherald.so and the wheel.
            for feature in [
                "herald/mpi",
                "herald-c/mpi",
                "extension-module,mpi --auditwheel skip",
            ] {
                assert!(error.contains(feature), "{feature}: {error}");
            }
        }
    }
}
