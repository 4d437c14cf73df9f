//! bootstrap_from_env over a map: launcher precedence and every error, without
//! touching the real process environment.

use std::collections::HashMap;

use herald_tcp::{Bootstrap, BootstrapError, BootstrapSource, Secret, bootstrap_from_env};

fn boot(vars: &[(&str, &str)]) -> Result<Bootstrap, BootstrapError> {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    bootstrap_from_env(&|key| env.get(key).cloned())
}

fn found(vars: &[(&str, &str)]) -> (u32, u32, BootstrapSource) {
    let boot = boot(vars).unwrap_or_else(|err| panic!("{vars:?}: {err}"));
    (boot.rank, boot.size, boot.source)
}

const HERALD: [(&str, &str); 2] = [("HERALD_RANK", "5"), ("HERALD_SIZE", "6")];
const OMPI: [(&str, &str); 2] = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "4")];
const PMI: [(&str, &str); 2] = [("PMI_RANK", "2"), ("PMI_SIZE", "3")];
const SLURM: [(&str, &str); 2] = [("SLURM_PROCID", "7"), ("SLURM_NTASKS", "8")];

#[test]
fn each_source_alone() {
    assert_eq!(found(&HERALD), (5, 6, BootstrapSource::Herald));
    assert_eq!(found(&OMPI), (1, 4, BootstrapSource::OpenMpi));
    assert_eq!(found(&PMI), (2, 3, BootstrapSource::Pmi));
    assert_eq!(found(&SLURM), (7, 8, BootstrapSource::Slurm));
    assert_eq!(
        found(&[("PMIX_RANK", "3"), ("HERALD_SIZE", "4")]),
        (3, 4, BootstrapSource::Pmix)
    );
}

#[test]
fn precedence_herald_then_mpi_then_pmi_then_pmix_then_slurm() {
    let all: Vec<_> = [&HERALD[..], &OMPI, &PMI, &SLURM, &[("PMIX_RANK", "0")]].concat();
    assert_eq!(found(&all).2, BootstrapSource::Herald);
    let no_herald: Vec<_> = [&OMPI[..], &PMI, &SLURM, &[("PMIX_RANK", "0")]].concat();
    assert_eq!(found(&no_herald), (1, 4, BootstrapSource::OpenMpi));
    // mpirun inside a Slurm allocation: the MPI launcher's variables win.
    assert_eq!(
        found(&[&PMI[..], &SLURM].concat()),
        (2, 3, BootstrapSource::Pmi)
    );
    let pmix_and_slurm = [
        ("PMIX_RANK", "2"),
        ("HERALD_SIZE", "3"),
        SLURM[0],
        ("SLURM_NTASKS", "3"),
    ];
    assert_eq!(found(&pmix_and_slurm), (2, 3, BootstrapSource::Pmix));
}

#[test]
fn an_incomplete_launcher_pair_falls_through() {
    let vars = [("OMPI_COMM_WORLD_RANK", "1"), PMI[0], PMI[1]];
    assert_eq!(found(&vars), (2, 3, BootstrapSource::Pmi));
    let vars = [("PMI_SIZE", "9"), SLURM[0], SLURM[1]];
    assert_eq!(found(&vars), (7, 8, BootstrapSource::Slurm));
    // Empty values count as unset.
    let vars = [
        ("OMPI_COMM_WORLD_RANK", ""),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        SLURM[0],
        SLURM[1],
    ];
    assert_eq!(found(&vars).2, BootstrapSource::Slurm);
}

#[test]
fn pmix_takes_its_size_from_herald_or_a_matching_slurm_step() {
    let srun = [("PMIX_RANK", "7"), SLURM[0], SLURM[1]];
    assert_eq!(found(&srun), (7, 8, BootstrapSource::Pmix));
    let err = boot(&[("PMIX_RANK", "1")]).unwrap_err();
    assert!(matches!(err, BootstrapError::PmixWithoutSize));
    assert!(err.to_string().contains("set HERALD_SIZE"), "{err}");
    // A leaked Slurm rank that disagrees is not trusted for the size.
    let leaked = [("PMIX_RANK", "1"), SLURM[0], SLURM[1]];
    assert!(matches!(
        boot(&leaked),
        Err(BootstrapError::PmixWithoutSize)
    ));
}

#[test]
fn nothing_at_all_says_what_to_set() {
    let err = boot(&[]).unwrap_err();
    assert!(matches!(err, BootstrapError::NoRank));
    assert!(
        err.to_string().contains("HERALD_RANK and HERALD_SIZE"),
        "{err}"
    );
}

#[test]
fn a_size_without_a_rank_is_refused_not_taken_for_a_job_of_one() {
    let err = boot(&[("HERALD_SIZE", "4")]).unwrap_err();
    assert!(
        matches!(err, BootstrapError::SizeWithoutRank { size: 4 }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("set HERALD_RANK (0 to 3)"),
        "{err}"
    );
    // A size of one asks for what a process alone is anyway.
    assert!(matches!(
        boot(&[("HERALD_SIZE", "1")]),
        Err(BootstrapError::NoRank)
    ));
}

#[test]
fn malformed_values_name_the_variable() {
    let err = boot(&[("OMPI_COMM_WORLD_RANK", "one"), OMPI[1]]).unwrap_err();
    assert!(
        matches!(
            err,
            BootstrapError::NotANumber {
                var: "OMPI_COMM_WORLD_RANK",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("OMPI_COMM_WORLD_RANK=\"one\""),
        "{err}"
    );
    let err = boot(&[("SLURM_PROCID", "-1"), SLURM[1]]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::NotANumber {
            var: "SLURM_PROCID",
            ..
        }
    ));
    let err = boot(&[("PMI_RANK", "3"), ("PMI_SIZE", "3")]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::RankOutOfRange {
            rank_var: "PMI_RANK",
            rank: 3,
            size: 3,
            ..
        }
    ));
    assert!(
        err.to_string().contains("ranks run from 0 to size-1"),
        "{err}"
    );
    let err = boot(&[("HERALD_RANK", "0"), ("HERALD_SIZE", "0")]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::ZeroSize { var: "HERALD_SIZE" }
    ));
    let err = boot(&[("HERALD_RANK", "0"), SLURM[0], SLURM[1]]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::Incomplete {
            present: "HERALD_RANK",
            missing: "HERALD_SIZE"
        }
    ));
    let err = boot(&[("HERALD_SIZE", "5"), OMPI[0], OMPI[1]]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::SizeMismatch {
            var: "OMPI_COMM_WORLD_SIZE",
            size: 4,
            herald_size: 5
        }
    ));
    assert_eq!(
        found(&[("HERALD_SIZE", "4"), OMPI[0], OMPI[1]]).2,
        BootstrapSource::OpenMpi
    );
}

#[test]
fn coordinator_secret_and_cluster() {
    let secret = Secret::random();
    let hex = secret.to_hex();
    let boot_ok = boot(&[
        HERALD[0],
        HERALD[1],
        ("HERALD_COORDINATOR", "127.0.0.1:7000"),
        ("HERALD_SECRET", &hex),
        ("HERALD_CLUSTER", "job-42"),
    ])
    .expect("complete bootstrap");
    assert_eq!(
        boot_ok.coordinator,
        Some("127.0.0.1:7000".parse().expect("addr"))
    );
    assert_eq!(
        boot_ok.secret.as_ref().map(Secret::to_hex),
        Some(hex.clone())
    );
    let config = boot_ok.mesh_config().expect("mesh config");
    assert_eq!(
        (config.rank, config.size, config.cluster_id.as_str()),
        (5, 6, "job-42")
    );

    let named = boot(&[
        HERALD[0],
        HERALD[1],
        ("HERALD_COORDINATOR", "localhost:7000"),
    ])
    .expect("host name");
    assert_eq!(named.coordinator.map(|a| a.port()), Some(7000));
    let err = boot(&[HERALD[0], HERALD[1], ("HERALD_COORDINATOR", "no port here")]).unwrap_err();
    assert!(
        matches!(err, BootstrapError::BadCoordinator { .. }),
        "{err:?}"
    );

    let err = boot(&[HERALD[0], HERALD[1], ("HERALD_SECRET", "abc")]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::BadSecret {
            var: "HERALD_SECRET",
            ..
        }
    ));
    assert!(
        !err.to_string().contains("abc"),
        "a secret must not be echoed: {err}"
    );
    let err = boot(&[
        HERALD[0],
        HERALD[1],
        ("HERALD_SECRET", &hex),
        ("HERALD_SECRET_FILE", "/x"),
    ])
    .unwrap_err();
    assert!(matches!(err, BootstrapError::TwoSecrets));
    let long = "c".repeat(256);
    let err = boot(&[HERALD[0], HERALD[1], ("HERALD_CLUSTER", &long)]).unwrap_err();
    assert!(matches!(err, BootstrapError::ClusterTooLong { len: 256 }));

    let bound = boot(&[HERALD[0], HERALD[1], ("HERALD_BIND", "0.0.0.0")]).expect("bind");
    assert_eq!(bound.bind, Some([0, 0, 0, 0].into()));
    let err = boot(&[HERALD[0], HERALD[1], ("HERALD_BIND", "eth0")]).unwrap_err();
    assert!(matches!(err, BootstrapError::BadBind { .. }), "{err:?}");

    let bare = boot(&HERALD).expect("rank only");
    assert!(matches!(
        bare.mesh_config(),
        Err(BootstrapError::MissingCoordinator)
    ));
    let no_secret =
        boot(&[HERALD[0], HERALD[1], ("HERALD_COORDINATOR", "127.0.0.1:1")]).expect("no secret");
    assert!(matches!(
        no_secret.mesh_config(),
        Err(BootstrapError::MissingSecret)
    ));
}

#[test]
fn secret_file_is_read_and_checked() {
    let secret = Secret::random();
    let dir = std::env::temp_dir().join(format!("herald-tcp-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("secret");
    std::fs::write(&good, format!("{}\n", secret.to_hex())).expect("write secret");
    let bad = dir.join("bad");
    std::fs::write(&bad, "not hex at all").expect("write bad secret");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();

    let read =
        boot(&[HERALD[0], HERALD[1], ("HERALD_SECRET_FILE", &path(&good))]).expect("secret file");
    assert_eq!(read.secret.map(|s| s.to_hex()), Some(secret.to_hex()));
    let err = boot(&[HERALD[0], HERALD[1], ("HERALD_SECRET_FILE", &path(&bad))]).unwrap_err();
    assert!(matches!(
        err,
        BootstrapError::BadSecret {
            var: "HERALD_SECRET_FILE",
            ..
        }
    ));
    let missing = dir.join("missing");
    let err = boot(&[
        HERALD[0],
        HERALD[1],
        ("HERALD_SECRET_FILE", &path(&missing)),
    ])
    .unwrap_err();
    assert!(matches!(err, BootstrapError::SecretFile { .. }));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn flags_are_checked_like_the_environment() {
    let boot = Bootstrap::from_flags(2, 4, None, None).expect("valid flags");
    assert_eq!(boot.source, BootstrapSource::Flags);
    assert!(matches!(
        Bootstrap::from_flags(4, 4, None, None),
        Err(BootstrapError::RankOutOfRange {
            rank_var: "--rank",
            ..
        })
    ));
    assert!(matches!(
        Bootstrap::from_flags(0, 0, None, None),
        Err(BootstrapError::ZeroSize { var: "--size" })
    ));
}

/// `HERALD_HEARTBEAT_MS=0` alone turns silence detection off (no heartbeats: an
/// idle link is silent), where it used to leave the default 10 s timeout, which
/// the mesh then refused; a timeout given with it is kept (and refused there).
#[test]
fn no_heartbeat_alone_turns_silence_detection_off() {
    let hex = Secret::random().to_hex();
    let base = [
        HERALD[0],
        HERALD[1],
        ("HERALD_COORDINATOR", "127.0.0.1:7000"),
        ("HERALD_SECRET", hex.as_str()),
    ];
    let config = |extra: &[(&str, &str)]| {
        let vars: Vec<_> = base.iter().chain(extra).copied().collect();
        boot(&vars)
            .and_then(|boot| boot.mesh_config())
            .unwrap_or_else(|err| panic!("{extra:?}: {err}"))
    };
    let off = config(&[("HERALD_HEARTBEAT_MS", "0")]);
    assert!(off.heartbeat.is_zero() && off.peer_timeout.is_zero());
    let asked = config(&[
        ("HERALD_HEARTBEAT_MS", "0"),
        ("HERALD_PEER_TIMEOUT_MS", "5000"),
    ]);
    assert_eq!(asked.peer_timeout, std::time::Duration::from_secs(5));
    let default = config(&[]);
    assert!(!default.heartbeat.is_zero() && !default.peer_timeout.is_zero());
}
