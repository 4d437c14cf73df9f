#!/usr/bin/env bash
# A real Open MPI launch of herald: 4 ranks under mpirun, each finding its rank and
# the job size in OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE (no HERALD_RANK or
# HERALD_SIZE is set). Node 0 loads the example C plugin, whose constructor
# registers its tasks on every node, and runs every task on every node.
# Fails loudly if any of it does not work.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RANKS=4

if ! command -v mpirun >/dev/null 2>&1; then
    echo "mpi.sh: installing openmpi-bin"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openmpi-bin >/dev/null
fi
command -v mpirun >/dev/null || { echo "mpi.sh: FAILED: mpirun is still missing" >&2; exit 1; }

cargo build --release -q -p herald
HERALD="$TARGET_DIR/release/herald"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc -shared -fPIC -I "$ROOT/include" "$ROOT/examples/c-plugin/plugin.c" -o "$WORK/libexample_plugin.so"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The secret goes in a 0600 file, never on a command line (README, "Running jobs").
"$HERALD" secret --file "$WORK/job.secret"

# Make sure nothing but Open MPI tells the ranks who they are.
unset HERALD_RANK HERALD_SIZE SLURM_PROCID SLURM_NTASKS PMI_RANK PMI_SIZE PMIX_RANK || true

set +e
OUTPUT=$(timeout 300 mpirun --allow-run-as-root --oversubscribe -np "$RANKS" \
    -x HERALD_COORDINATOR="127.0.0.1:$PORT" -x HERALD_SECRET_FILE="$WORK/job.secret" \
    "$HERALD" -v node --load "$WORK/libexample_plugin.so" \
    --main "$WORK/libexample_plugin.so:example_main" --library-path "$WORK" 2>&1)
STATUS=$?
set -e
echo "$OUTPUT"

fail() { echo "mpi.sh: FAILED: $*" >&2; exit 1; }
[ "$STATUS" -eq 0 ] || fail "mpirun exited with status $STATUS"
for node in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "node $node: example tasks registered" \
        || fail "node $node did not register the plugin's tasks"
    echo "$OUTPUT" | grep -q "node $node: example.checksum -> " \
        || fail "no task ran on node $node"
done
echo "$OUTPUT" | grep -q "all tasks succeeded on every node" || fail "tasks failed"
for rank in $(seq 0 $((RANKS - 1))); do
    echo "$OUTPUT" | grep -q "rank $rank of $RANKS, bootstrap from OpenMpi" \
        || fail "rank $rank did not take its rank from Open MPI's environment"
done
echo "mpi.sh: OK: $RANKS ranks bootstrapped from Open MPI, plugin loaded and run on every node"
