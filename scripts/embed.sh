#!/usr/bin/env bash
# Programs that embed herald, built the usual way and run as real jobs:
#
#   1. examples/embed-c, compiled with `cc ... $(pkg-config --cflags --libs herald)`,
#      under `herald run -n 4` and under `mpirun -np 4` (Open MPI's environment only);
#   2. examples/embed-cpp (C++ with RAII), configured by CMake through
#      pkg_check_modules, under `herald run -n 4`;
#   3. examples/embed-fortran (herald_init/herald_finalize through ISO_C_BINDING)
#      under `herald run -n 4`;
#   4. examples/embed-c-mpi, the sans-IO core driven over MPI by a C program,
#      under `mpirun -np 4`.
#
# Installs what a fresh Debian machine lacks: pkg-config, cmake, g++, gfortran,
# Open MPI (runtime and headers). Fails loudly if anything does not work.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RANKS=4

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v gfortran >/dev/null 2>&1 || need+=(gfortran)
command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
if [ ${#need[@]} -gt 0 ]; then
    echo "embed.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

fail() { echo "embed.sh: FAILED: $*" >&2; exit 1; }

# `cargo build --release` builds libherald.so and writes herald.pc next to it.
cargo build --release -q -p herald -p herald-c
export PKG_CONFIG_PATH="$TARGET_DIR/release/pkgconfig"
HERALD="$TARGET_DIR/release/herald"
[ -f "$PKG_CONFIG_PATH/herald.pc" ] || fail "cargo build did not write herald.pc"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cc -shared -fPIC -I "$ROOT/include" "$ROOT/examples/c-plugin/plugin.c" -o libexample_plugin.so

# Ranks find their place from Open MPI alone under mpirun; programs find
# libherald.so through the rpath herald.pc gives them, not LD_LIBRARY_PATH.
unset HERALD_RANK HERALD_SIZE SLURM_PROCID SLURM_NTASKS PMI_RANK PMI_SIZE PMIX_RANK LD_LIBRARY_PATH || true
mpi_run() {
    local port secret
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    secret=$(od -vAn -N32 -tx1 /dev/urandom | tr -d ' \n')
    timeout 300 mpirun --allow-run-as-root --oversubscribe -np "$RANKS" \
        -x HERALD_COORDINATOR="127.0.0.1:$port" -x HERALD_SECRET="$secret" "$@"
}

check_embed_c() { # $1: how it was launched, $2: its output
    for node in $(seq 0 $((RANKS - 1))); do
        [ "$(echo "$2" | grep -c "node $node: example tasks registered")" -eq 1 ] \
            || fail "$1: node $node did not register the plugin's tasks exactly once"
        echo "$2" | grep -q "rank $node finalized" || fail "$1: rank $node did not finalize"
    done
    echo "$2" | grep -q "embed-c: every task right on every rank" || fail "$1: wrong answers"
}

echo "embed.sh: both headers compile as C11 and C++"
printf '#include "herald.h"\n#include "herald_core.h"\n' > headers.c
cc -std=c11 -Wall -Wextra -pedantic -Werror -fsyntax-only -I "$ROOT/include" headers.c
c++ -std=c++11 -Wall -Wextra -pedantic -Werror -fsyntax-only -x c++ -I "$ROOT/include" headers.c

echo "embed.sh: examples/embed-c, built with pkg-config"
# shellcheck disable=SC2046 # pkg-config prints several flags
cc -Wall -Wextra -Werror "$ROOT/examples/embed-c/embed.c" $(pkg-config --cflags --libs herald) -o embed-c
OUTPUT=$(timeout 120 "$HERALD" run -n "$RANKS" -- ./embed-c ./libexample_plugin.so 2>&1) \
    || { echo "$OUTPUT"; fail "embed-c under herald run"; }
echo "$OUTPUT"
check_embed_c "herald run" "$OUTPUT"

OUTPUT=$(HERALD_LOG=info mpi_run ./embed-c ./libexample_plugin.so 2>&1) \
    || { echo "$OUTPUT"; fail "embed-c under mpirun"; }
echo "$OUTPUT"
check_embed_c "mpirun" "$OUTPUT"
for rank in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "rank $rank of $RANKS, bootstrap from OpenMpi" \
        || fail "mpirun: rank $rank did not take its rank from Open MPI's environment"
done

echo "embed.sh: examples/embed-cpp, configured by CMake with pkg_check_modules"
cmake -S "$ROOT/examples/embed-cpp" -B build-cpp >/dev/null
cmake --build build-cpp >/dev/null
OUTPUT=$(timeout 120 "$HERALD" run -n "$RANKS" -- build-cpp/embed-cpp ./libexample_plugin.so 2>&1) \
    || { echo "$OUTPUT"; fail "embed-cpp under herald run"; }
echo "$OUTPUT"
echo "$OUTPUT" | grep -q "embed-cpp: every rank answered" || fail "embed-cpp: no answer from every rank"

echo "embed.sh: examples/embed-fortran"
# shellcheck disable=SC2046 # pkg-config prints several flags
gfortran -Wall "$ROOT/examples/embed-fortran/app.f90" $(pkg-config --libs herald) -o embed-fortran
OUTPUT=$(timeout 120 "$HERALD" run -n "$RANKS" -- ./embed-fortran 2>&1) \
    || { echo "$OUTPUT"; fail "embed-fortran under herald run"; }
echo "$OUTPUT"
for rank in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "\[$rank\] fortran: rank $rank of $RANKS" \
        || fail "embed-fortran: rank $rank did not join the job"
done

echo "embed.sh: examples/embed-c-mpi, the sans-IO core over MPI"
# shellcheck disable=SC2046 # pkg-config prints several flags
mpicc -Wall -Wextra -Werror "$ROOT/examples/embed-c-mpi/embed_mpi.c" $(pkg-config --cflags --libs herald) -o embed-c-mpi
[ "$(wc -l < "$ROOT/examples/embed-c-mpi/embed_mpi.c")" -lt 250 ] || fail "embed_mpi.c grew past 250 lines"
OUTPUT=$(timeout 120 mpirun --allow-run-as-root --oversubscribe -np "$RANKS" ./embed-c-mpi 2>&1) \
    || { echo "$OUTPUT"; fail "embed-c-mpi under mpirun"; }
echo "$OUTPUT"
for rank in $(seq 0 $((RANKS - 1))); do
    [ "$(echo "$OUTPUT" | grep -c "rank $rank: hello callback ran")" -eq 1 ] \
        || fail "embed-c-mpi: the callback did not run exactly once on rank $rank"
    echo "$OUTPUT" | grep -q "rank 0: square on rank $rank -> $(((rank + 2) * (rank + 2)))\$" \
        || fail "embed-c-mpi: no right answer from rank $rank"
    echo "$OUTPUT" | grep -q "rank $rank: done" || fail "embed-c-mpi: rank $rank did not finish"
done
echo "$OUTPUT" | grep -q "rank 0: registered on every rank" || fail "embed-c-mpi: registration not complete"

echo "embed.sh: OK"
