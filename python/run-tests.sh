#!/usr/bin/env bash
# Builds herald and herald-python, the herald wheel (maturin) and the native
# test libraries, installs the test dependencies (pytest, cloudpickle, maturin)
# and the wheel into a virtualenv, and runs the Python suites inside real jobs
# of 1, 2 and 4 nodes, both ways:
#
#     herald-python -n N -m pytest python/tests                  # embedded
#     herald run -n N -- $VENV/bin/python -m pytest python/tests  # stock python + wheel
#
# (rank 0 runs pytest, the other ranks serve it). Exits non-zero if any suite
# fails or runs no test. Needs only Rust, a C compiler and CPython 3.9+ with pip.
#
#     python/run-tests.sh            # all node counts, both ways
#     NODE_COUNTS="4" MODES=python python/run-tests.sh -k nested   # extra args go to pytest
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PYTHON=${PYTHON:-python3}
NODE_COUNTS=${NODE_COUNTS:-"1 2 4"}
# herald-python: the embedded interpreter; python: the virtualenv's python3 with the wheel.
MODES=${MODES:-"herald-python python"}
# Reused between runs; any directory will do.
VENV=${HERALD_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-python/test-venv}

echo "run-tests.sh: building herald and herald-python"
cargo build -q --manifest-path "$ROOT/Cargo.toml" -p herald -p herald-python
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
HERALD_PYTHON="$TARGET_DIR/debug/herald-python"
export HERALD_BIN="$TARGET_DIR/debug/herald"

export HERALD_PYTHON

if ! "$VENV/bin/python" -c 'import pytest, cloudpickle' 2>/dev/null \
    || ! [ -x "$VENV/bin/maturin" ]; then
    echo "run-tests.sh: installing pytest, cloudpickle and maturin into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "pytest>=7" "cloudpickle>=2" "maturin>=1.5,<2"
fi
# herald-python imports an activated virtualenv's packages.
export VIRTUAL_ENV="$VENV"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

case " $MODES " in
*" python "*)
    echo "run-tests.sh: building the herald wheel (maturin) and installing it into $VENV"
    "$VENV/bin/maturin" build -q --release -m "$ROOT/pyhost/Cargo.toml" -o "$WORK/wheels"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall \
        --no-deps "$WORK"/wheels/herald-*.whl
    ;;
esac
mkdir -p "$WORK/lib/global" "$WORK/lib/local" "$WORK/results"
NATIVETASKS_C="$ROOT/examples/python/nativetasks/nativetasks.c"
cc -shared -fPIC -I "$ROOT/include" "$NATIVETASKS_C" -o "$WORK/lib/global/libnativetasks.so"
cc -shared -fPIC -DNATIVETASKS_LOCAL_ONLY -I "$ROOT/include" "$NATIVETASKS_C" \
    -o "$WORK/lib/local/libnativetasks.so"
cc -shared -fPIC -I "$ROOT/include" "$ROOT/examples/c-plugin/plugin.c" \
    -o "$WORK/lib/libexample_plugin.so"
# Every node may load from there (and only from there).
export HERALD_LIBRARY_PATH="$WORK/lib"
export NATIVETASKS_LIBRARY="$WORK/lib/global/libnativetasks.so"
export NATIVETASKS_LOCAL_LIBRARY="$WORK/lib/local/libnativetasks.so"
export HERALD_EXAMPLE_PLUGIN="$WORK/lib/libexample_plugin.so"
export PYTHONDONTWRITEBYTECODE=1

# The command that runs `python ARGS` as a job of N nodes, by mode.
job() {
    local mode=$1 nodes=$2
    shift 2
    case "$mode" in
    herald-python) timeout 600 "$HERALD_PYTHON" -n "$nodes" "$@" ;;
    python)
        if [ "$nodes" = 1 ]; then
            # No launcher: a job of one node.
            timeout 600 "$VENV/bin/python" "$@"
        else
            timeout 600 "$HERALD_BIN" run -n "$nodes" -- "$VENV/bin/python" "$@"
        fi
        ;;
    esac
}

failed_suites=()
for mode in $MODES; do
    for nodes in $NODE_COUNTS; do
        echo "run-tests.sh: the suite on $nodes node(s), $mode"
        # pytest's exit status 5 (no test collected) fails the suite like any other.
        if ! (cd "$ROOT" && job "$mode" "$nodes" -m pytest -q -p no:cacheprovider \
            --junitxml="$WORK/results/$mode-$nodes.xml" "$HERE/tests" "$@"); then
            failed_suites+=("$mode:$nodes")
        fi
    done
done

# mpi4py and herald in one process under mpirun, imported in either order
# (mpirun comes from .ci/mpi.sh; mpi4py from PyPI, built against Debian's
# libopenmpi-dev if it has no wheel here).
coexist_passed=0
case " $MODES " in
*" python "*)
    if ! command -v mpirun >/dev/null 2>&1; then
        echo "run-tests.sh: mpi4py coexistence skipped: no mpirun (.ci/mpi.sh installs it)"
    else
        if ! "$VENV/bin/python" -c 'import mpi4py' 2>/dev/null; then
            if ! command -v mpicc >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev >/dev/null \
                    || echo "run-tests.sh: cannot install libopenmpi-dev"
            fi
            "$VENV/bin/python" -m pip install -q --disable-pip-version-check mpi4py
        fi
        secret=$(od -vAn -N32 -tx1 /dev/urandom | tr -d ' \n')
        for order in mpi-first herald-first; do
            port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            echo "run-tests.sh: mpi4py and herald under mpirun, $order"
            if HERALD_COORDINATOR="127.0.0.1:$port" HERALD_SECRET="$secret" timeout 120 \
                mpirun --allow-run-as-root --oversubscribe -np 3 \
                -x HERALD_COORDINATOR -x HERALD_SECRET -x HERALD_LIBRARY_PATH \
                "$VENV/bin/python" "$HERE/mpi/coexist.py" "$order"; then
                coexist_passed=$((coexist_passed + 1))
            else
                failed_suites+=("mpi4py:$order")
            fi
        done
    fi
    ;;
esac

# One closing line for all suites, counted from pytest's reports.
"$PYTHON" - "$WORK/results" "$coexist_passed" <<'PY'
import glob, sys, xml.etree.ElementTree as tree
passed, failed, skipped = int(sys.argv[2]), 0, 0
for report in glob.glob(f"{sys.argv[1]}/*.xml"):
    for suite in tree.parse(report).getroot().iter("testsuite"):
        total, skip = int(suite.get("tests")), int(suite.get("skipped"))
        bad = int(suite.get("failures")) + int(suite.get("errors"))
        passed, failed, skipped = passed + total - bad - skip, failed + bad, skipped + skip
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
if [ ${#failed_suites[@]} -ne 0 ]; then
    echo "run-tests.sh: FAILED (mode:nodes): ${failed_suites[*]}" >&2
    exit 1
fi
echo "run-tests.sh: OK on $NODE_COUNTS node(s), $MODES"
