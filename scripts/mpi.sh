#!/usr/bin/env bash
# herald over the job's own MPI (the `mpi` cargo feature), in real mpirun jobs:
#
#   1. lints of the MPI builds (herald-mpi, herald-host, the CLI, libherald.so,
#      herald-python with --features mpi), herald-mpi's unit tests, and its
#      mpi_order example under mpirun -np 2 (frames sent by two threads arrive
#      in order, then the close; shared memory and TCP)
#   2. cli/tests/mpi.rs: `herald node --transport mpi` under mpirun: the C plugin
#      scenario on 4 ranks, auto/tcp selection, a fan-out mismatch, an error
#      text longer than a frame, a rank that dies (Open MPI aborts the job), the
#      exit code of rank 0's program
#   3. C: herald_init under mpirun picks MPI (no secret, no port);
#      examples/embed-c-mpi-comm (herald_init_comm on the program's
#      MPI_COMM_WORLD, beside its own MPI_Allreduce); a program that initialised
#      MPI without MPI_THREAD_MULTIPLE is refused with what to do
#   4. Python: the herald wheel built with MPI support, the nativetasks scenario
#      under `mpirun -np 4 python3 -m pytest`, and mpi4py + herald in one process
#      over MPI, imported in either order (herald-python joins through the same
#      code as the wheel, job::start_runtime)
#
# Installs what a fresh Debian machine lacks: Open MPI (runtime and headers),
# libclang (rsmpi generates its bindings with bindgen), pkg-config; pytest,
# cloudpickle, maturin and mpi4py into the Python test virtualenv.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PYTHON=${PYTHON:-python3}
VENV=${HERALD_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-python/test-venv}
RANKS=4
FEATURES=herald-mpi/mpi,herald-host/mpi,herald/mpi,herald-c/mpi,herald-python/mpi

need=()
command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 \
    || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "mpi.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
fail() { echo "mpi.sh: FAILED: $*" >&2; exit 1; }

# As root, mpirun wants to be told; ranks may outnumber cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(timeout 300 mpirun --oversubscribe)
unset HERALD_RANK HERALD_SIZE HERALD_COORDINATOR HERALD_SECRET HERALD_SECRET_FILE \
    HERALD_TRANSPORT SLURM_PROCID SLURM_NTASKS PMI_RANK PMI_SIZE PMIX_RANK || true

echo "mpi.sh: lints and tests of the MPI builds"
cargo clippy -q -p herald-mpi -p herald-host -p herald -p herald-c -p herald-python \
    --all-targets --features "$FEATURES" -- -D warnings
cargo test -q -p herald-mpi --features herald-mpi/mpi
cargo test -q -p herald --features herald/mpi --test mpi
# Frames sent by two threads in turn, large ones among small, arrive in order and
# before the close, over shared memory and over TCP.
cargo build -q -p herald-mpi --features herald-mpi/mpi --example mpi_order
for btl in vader,self tcp,self; do
    "${MPIRUN[@]}" -np 2 --mca btl "$btl" "$TARGET_DIR/debug/examples/mpi_order" \
        || fail "frames out of order over MPI (btl $btl)"
done
# target/debug/libherald.so with MPI support, which the C programs below link
# (as a test's dependency it stays under deps/; built on its own it is put here).
cargo build -q -p herald-c --features herald-c/mpi

echo "mpi.sh: C programs over MPI"
export PKG_CONFIG_PATH="$TARGET_DIR/debug/pkgconfig"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc -shared -fPIC -I "$ROOT/include" "$ROOT/examples/c-plugin/plugin.c" -o "$WORK/libexample_plugin.so"
# shellcheck disable=SC2046 # pkg-config prints several flags
cc -Wall -Wextra -Werror "$ROOT/examples/embed-c/embed.c" $(pkg-config --cflags --libs herald) \
    -o "$WORK/embed-c"
# shellcheck disable=SC2046
mpicc -Wall -Wextra -Werror "$ROOT/examples/embed-c-mpi-comm/embed_comm.c" \
    $(pkg-config --cflags --libs herald) -o "$WORK/embed-comm"
cat > "$WORK/single.c" <<'EOF'
#include <stdio.h>
#include "herald_mpi.h"
int main(int argc, char **argv) { /* MPI_Init gives MPI_THREAD_SINGLE */
    MPI_Init(&argc, &argv);
    int rc = herald_init_comm(MPI_COMM_WORLD);
    MPI_Finalize();
    return rc == HERALD_ERR_FAILED ? 0 : 1;
}
EOF
# shellcheck disable=SC2046
mpicc -Wall -Werror "$WORK/single.c" $(pkg-config --cflags --libs herald) -o "$WORK/single"
cat > "$WORK/misuse.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include "herald_mpi.h"
/* herald_init_comm misused: it must return an error, never abort the job. */
int main(int argc, char **argv) {
    int provided, rc;
    if (!strcmp(argv[1], "before-init")) { /* MPI not initialised yet */
        rc = herald_init_comm(MPI_COMM_WORLD);
        int initialised = 1;
        MPI_Initialized(&initialised);
        return rc == HERALD_ERR_FAILED && !initialised ? 0 : 1;
    }
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (!strcmp(argv[1], "mpi-finalize-first")) { /* herald_finalize after MPI_Finalize */
        if (herald_init_comm(MPI_COMM_WORLD) != HERALD_OK) return 1;
        MPI_Finalize(); /* herald stops calling MPI: no crash */
        return herald_finalize() == HERALD_ERR_FAILED ? 0 : 1;
    }
    if (!strcmp(argv[1], "mpi-finalize-first-on-one")) { /* only rank 1 of 4 does */
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        if (herald_init_comm(MPI_COMM_WORLD) != HERALD_OK) return 1;
        if (rank == 1) { /* its MPI_Finalize waits for the others' */
            MPI_Finalize();
            return herald_finalize() == HERALD_ERR_FAILED ? 0 : 1;
        }
        /* They learn that rank 1 is gone (instead of waiting for it for ever),
         * and only then call MPI_Finalize. */
        char error[512] = "";
        rc = herald_finalize();
        herald_wait(0, error, sizeof error);
        printf("rank %d: herald_finalize %d: %s\n", rank, rc, error);
        MPI_Finalize();
        return rc == HERALD_ERR_FAILED && strstr(error, "[1]") ? 0 : 1;
    }
    MPI_Comm comm = MPI_COMM_NULL; /* null-comm; split-out: MPI_UNDEFINED but on rank 0 */
    if (!strcmp(argv[1], "split-out")) {
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, 0, &comm);
        if (rank == 0) { /* a communicator of one, beside a rank left out */
            rc = herald_init_comm(comm);
            rc = rc == HERALD_OK ? herald_finalize() : rc;
            MPI_Comm_free(&comm);
            MPI_Finalize();
            return rc;
        }
    }
    rc = herald_init_comm(comm);
    MPI_Finalize();
    return rc == HERALD_ERR_FAILED ? 0 : 1;
}
EOF
# shellcheck disable=SC2046
mpicc -Wall -Werror "$WORK/misuse.c" $(pkg-config --cflags --libs herald) -o "$WORK/misuse"
cd "$WORK"

OUTPUT=$(HERALD_LOG=info "${MPIRUN[@]}" -np "$RANKS" ./embed-c ./libexample_plugin.so 2>&1) \
    || { echo "$OUTPUT"; fail "embed-c (herald_init) under mpirun"; }
echo "$OUTPUT"
for rank in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "herald_init: rank $rank of $RANKS, over MPI (herald initialised MPI)" \
        || fail "embed-c: rank $rank did not join over MPI"
    echo "$OUTPUT" | grep -q "rank $rank finalized" || fail "embed-c: rank $rank did not finalize"
done
echo "$OUTPUT" | grep -q "embed-c: every task right on every rank" || fail "embed-c: wrong answers"

OUTPUT=$(HERALD_LOG=info "${MPIRUN[@]}" -np "$RANKS" ./embed-comm ./libexample_plugin.so 2>&1) \
    || { echo "$OUTPUT"; fail "embed-comm (herald_init_comm) under mpirun"; }
echo "$OUTPUT"
for rank in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "rank $rank of $RANKS, over MPI (the program initialised MPI)" \
        || fail "embed-comm: rank $rank did not join on the program's MPI"
    [ "$(echo "$OUTPUT" | grep -o "node $rank: example tasks registered" | wc -l)" -eq 1 ] \
        || fail "embed-comm: node $rank did not register the plugin's tasks exactly once"
    echo "$OUTPUT" | grep -q "node $rank: example.checksum -> " || fail "embed-comm: no task on $rank"
    echo "$OUTPUT" | grep -q "rank $rank finalized herald" || fail "embed-comm: rank $rank"
done
echo "$OUTPUT" | grep -q "MPI_Allreduce counted $RANKS ranks" || fail "embed-comm: the program's MPI"

OUTPUT=$("${MPIRUN[@]}" -np 2 ./single 2>&1) || { echo "$OUTPUT"; fail "MPI_THREAD_SINGLE not refused"; }
echo "$OUTPUT" | grep -q "MPI was initialised with MPI_THREAD_SINGLE.*MPI_THREAD_MULTIPLE" \
    || { echo "$OUTPUT"; fail "the refusal does not say what to do"; }
echo "mpi.sh: MPI_THREAD_SINGLE refused, saying what to do"
for mode in null-comm split-out before-init mpi-finalize-first; do
    OUTPUT=$("${MPIRUN[@]}" -np 2 ./misuse "$mode" 2>&1) || { echo "$OUTPUT"; fail "herald_init_comm, $mode"; }
    case $mode in
        before-init) expected="MPI is not initialised: call MPI_Init_thread" ;;
        mpi-finalize-first) expected="the program called MPI_Finalize before herald_finalize" ;;
        *) expected="the communicator is MPI_COMM_NULL: call herald_init_comm only on ranks" ;;
    esac
    echo "$OUTPUT" | grep -q "$expected" || { echo "$OUTPUT"; fail "herald_init_comm, $mode: no reason"; }
done
# One rank's MPI_Finalize first tells the others that its links close: their
# herald_finalize fails naming it instead of waiting for it for ever (a hang
# here is a failure: a short timeout).
OUTPUT=$(timeout 60 mpirun --oversubscribe -np 4 ./misuse mpi-finalize-first-on-one 2>&1) \
    || { echo "$OUTPUT"; fail "MPI_Finalize first on one rank: the others did not learn it"; }
[ "$(echo "$OUTPUT" | grep -o "node(s) \[1\] went down before calling herald_finalize" | wc -l)" -ge 3 ] \
    || { echo "$OUTPUT"; fail "MPI_Finalize first on one rank: not named by the others"; }
echo "mpi.sh: herald_init_comm on MPI_COMM_NULL or before MPI_Init refused, MPI_Finalize before herald_finalize survived (on every rank or on one)"
cd "$ROOT"

echo "mpi.sh: the herald wheel with MPI support, under mpirun"
if ! "$VENV/bin/python" -c 'import pytest, cloudpickle, mpi4py' 2>/dev/null \
    || ! [ -x "$VENV/bin/maturin" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "pytest>=7" "cloudpickle>=2" "maturin>=1.5,<2" mpi4py
fi
# The wheel links the system's libmpi, as mpi4py does: auditwheel must not copy
# it into the wheel (two MPI libraries in one process cannot work). A debug
# build: it reuses the MPI-enabled herald-host built above.
"$VENV/bin/maturin" build -q -m "$ROOT/pyhost/Cargo.toml" \
    --features extension-module,mpi --auditwheel skip -o "$WORK/wheels"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall \
    --no-deps "$WORK"/wheels/herald-*.whl
mkdir -p "$WORK/lib/global"
cc -shared -fPIC -I "$ROOT/include" "$ROOT/examples/python/nativetasks/nativetasks.c" \
    -o "$WORK/lib/global/libnativetasks.so"
cp "$WORK/libexample_plugin.so" "$WORK/lib/"
export HERALD_LIBRARY_PATH="$WORK/lib" PYTHONDONTWRITEBYTECODE=1
export NATIVETASKS_LIBRARY="$WORK/lib/global/libnativetasks.so"
export HERALD_EXAMPLE_PLUGIN="$WORK/lib/libexample_plugin.so"
# No HERALD_TRANSPORT: auto takes MPI under mpirun. The nativetasks test left
# out starts jobs of its own (herald-python -n N), which is not about MPI.
OUTPUT=$(HERALD_LOG=info "${MPIRUN[@]}" -np "$RANKS" -x HERALD_LIBRARY_PATH -x PYTHONDONTWRITEBYTECODE \
    -x NATIVETASKS_LIBRARY -x HERALD_EXAMPLE_PLUGIN -x HERALD_LOG \
    "$VENV/bin/python" -m pytest -q -s -p no:cacheprovider "$ROOT/python/tests/test_nativetasks.py" \
    -k "not without_global_registration" 2>&1) || { echo "$OUTPUT"; fail "nativetasks under mpirun"; }
echo "$OUTPUT"
echo "$OUTPUT" | grep -q "2 passed" || fail "nativetasks: not every test passed"
[ "$(echo "$OUTPUT" | grep -o "over MPI (herald initialised MPI)" | wc -l)" -eq "$RANKS" ] \
    || fail "nativetasks: not every rank joined over MPI"
for order in mpi-first herald-first; do
    OUTPUT=$(HERALD_LOG=info "${MPIRUN[@]}" -np 3 -x HERALD_LIBRARY_PATH -x HERALD_LOG \
        "$VENV/bin/python" "$ROOT/python/mpi/coexist.py" "$order" 2>&1) \
        || { echo "$OUTPUT"; fail "mpi4py and herald over MPI, $order"; }
    echo "$OUTPUT"
    [ "$(echo "$OUTPUT" | grep -o "coexist $order: rank [0-9] of 3 ok" | wc -l)" -eq 3 ] || fail "coexist $order"
    [ "$(echo "$OUTPUT" | grep -o "over MPI" | wc -l)" -eq 3 ] || fail "coexist $order: not over MPI"
done
echo "mpi.sh: OK: herald node, C (herald_init, herald_init_comm) and Python over MPI"
