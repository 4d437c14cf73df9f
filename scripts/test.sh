#!/usr/bin/env bash
# The whole herald test suite, runnable on a fresh machine that has only the Rust
# toolchain, gcc and CPython 3.11 with pip: it installs what else it needs
# (Open MPI from Debian; pytest, cloudpickle and maturin into a virtualenv).
#
#   1. formatting and lints (rustfmt, clippy -D warnings)
#   2. Rust tests: core, simulator suites (exhaustive, property, scale), TCP,
#      host, the multi-process tests of real jobs (faults included: a rank cut
#      off in its own network namespace needs root and iproute2, installed here),
#      herald-python's own tests
#   3. loom models of the host's shared state
#   4. a real Open MPI launch of 4 ranks
#   5. embedding: libherald.so from C (pkg-config), C++ (CMake) and Fortran under
#      herald run and mpirun, and the sans-IO core over MPI from C (installs
#      pkg-config, cmake, g++, gfortran and Open MPI's headers)
#   6. the Python suites inside real jobs of 1, 2 and 4 nodes, under herald-python
#      and under a stock python3 with the herald wheel (built by maturin)
#   7. herald over MPI (the `mpi` feature; installs libclang-dev and Open MPI's
#      headers): herald node, herald_init, herald_init_comm and the Python
#      nativetasks scenario under mpirun -np 4 with the MPI transport
#   8. the demo (README's main command)
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build gains nothing from incremental compilation, which doubles what the
# build leaves on disk (a CI run once ran out of space with it on).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "Rust tests"
# cli/tests/faults.rs puts ranks in network namespaces (`ip netns`): install
# iproute2 if missing, and make that test fail rather than skip here.
if ! command -v ip >/dev/null 2>&1; then
    echo "test.sh: installing iproute2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq iproute2 >/dev/null
fi
HERALD_REQUIRE_NETNS=1 cargo test --workspace

step "loom: the host's handle table and per-thread invocation tracking"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p herald-host --release --test loom

step "a real Open MPI launch"
bash .ci/mpi.sh

step "embedding: libherald.so from C, C++ (CMake), Fortran, and the core over MPI"
bash scripts/embed.sh

step "Python suites on 1, 2 and 4 nodes: herald-python, and python3 with the wheel"
bash python/run-tests.sh

step "herald over MPI: herald node, C and Python under mpirun with the MPI transport"
bash scripts/mpi.sh

step "the demo"
cargo run --release -q -p herald -- demo

echo
echo "scripts/test.sh: all suites passed"
