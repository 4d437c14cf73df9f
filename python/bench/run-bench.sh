#!/usr/bin/env bash
# herald import_global vs Dask distributed: time to make a fresh module
# importable on every worker, N = 2, 4, 8 processes, in one run on this machine.
# Builds herald (release), installs Dask into a throwaway virtualenv, prints the
# medians, the physical floor measured in the same run (one import's CPU x N /
# cores + a no-op herald round), the ratios against the targets (herald within
# 1.5x of the floor, Dask's client.run at least 3x herald's time), and where
# herald's time goes (see import_bench.py for what is timed).
#
#     python/bench/run-bench.sh
#     NODE_COUNTS="2 4" HERALD_ITERATIONS=100 DASK_ITERATIONS=30 python/bench/run-bench.sh
#     RESULTS=/tmp/bench.jsonl python/bench/run-bench.sh   # keep the raw timings
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
NODE_COUNTS=${NODE_COUNTS:-"2 4 8"}
HERALD_ITERATIONS=${HERALD_ITERATIONS:-100}
DASK_ITERATIONS=${DASK_ITERATIONS:-30}

echo "run-bench.sh: building herald and herald-python (release)"
cargo build -q --release --manifest-path "$ROOT/Cargo.toml" -p herald -p herald-python
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
HERALD_PYTHON="$TARGET_DIR/release/herald-python"
export HERALD_BIN="$TARGET_DIR/release/herald"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "run-bench.sh: installing Dask into a throwaway virtualenv"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "dask[distributed]"
"$WORK/venv/bin/python" -c 'import dask, distributed; print("dask", dask.__version__, "distributed", distributed.__version__)'

RESULTS=${RESULTS:-"$WORK/results.jsonl"}
: > "$RESULTS"
for nodes in $NODE_COUNTS; do
    echo "run-bench.sh: N = $nodes: herald"
    "$HERALD_PYTHON" -n "$nodes" "$HERE/import_bench.py" herald "$RESULTS" \
        --iterations "$HERALD_ITERATIONS"
    echo "run-bench.sh: N = $nodes: dask"
    "$WORK/venv/bin/python" "$HERE/import_bench.py" dask "$nodes" "$RESULTS" \
        --iterations "$DASK_ITERATIONS"
done
echo
"$PYTHON" "$HERE/import_bench.py" report "$RESULTS"
