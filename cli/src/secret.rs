//! `herald secret [--file F [--force]]`: makes a fresh cluster secret, for
//! launchers other than `herald run` (mpirun, srun), which read it from
//! `HERALD_SECRET_FILE` or `HERALD_SECRET`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use herald_tcp::Secret;

/// Flags of `herald secret`.
#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// Write the secret to this file (created with mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "file")]
    pub force: bool,
}

/// Runs `herald secret`.
pub fn run(args: SecretArgs) -> anyhow::Result<ExitCode> {
    let hex = Secret::try_random()
        .context("generating the cluster secret")?
        .to_hex();
    match args.file {
        None => println!("{hex}"),
        Some(path) => write_secret_file(&path, &hex, args.force)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `hex` to `path` with mode 0600. With `force`, an existing file is
/// replaced by renaming a new one over it, so it is never readable by others
/// even for a moment, whatever its mode was.
fn write_secret_file(path: &Path, hex: &str, force: bool) -> anyhow::Result<()> {
    let target = if force {
        let name = path
            .file_name()
            .with_context(|| format!("{} names no file", path.display()))?;
        let mut temporary = name.to_os_string();
        temporary.push(format!(".tmp{}", std::process::id()));
        path.with_file_name(temporary)
    } else {
        path.to_path_buf()
    };
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && !force => {
            bail!(
                "{} already exists; pass --force to replace it with a new secret",
                path.display()
            )
        }
        Err(error) => bail!("cannot create {}: {error}", target.display()),
    };
    let written = (|| {
        // The umask may have cleared bits, never added any; make it exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{hex}\n").as_bytes())?;
        file.sync_all()?;
        if force {
            std::fs::rename(&target, path)?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&target);
        bail!("cannot write {}: {error}", path.display());
    }
    Ok(())
}
