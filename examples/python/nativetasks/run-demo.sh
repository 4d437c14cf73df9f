#!/usr/bin/env bash
# Builds libnativetasks twice - registering its tasks globally (the default) and
# on the loading node only - and runs demo.py on 4 nodes with each, to show the
# difference: with herald's global registration the native tasks run on every
# node; without it, the launches to the other nodes fail as unregistered.
#
#     examples/python/nativetasks/run-demo.sh     (from anywhere; builds what it needs)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
NODES=${NODES:-4}

cargo build -q --manifest-path "$ROOT/Cargo.toml" -p herald -p herald-python
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
HERALD_PYTHON="$TARGET_DIR/debug/herald-python"

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
mkdir -p "$BUILD/global" "$BUILD/local"
cc -shared -fPIC -I "$ROOT/include" "$HERE/nativetasks.c" -o "$BUILD/global/libnativetasks.so"
cc -shared -fPIC -DNATIVETASKS_LOCAL_ONLY -I "$ROOT/include" "$HERE/nativetasks.c" \
    -o "$BUILD/local/libnativetasks.so"
export HERALD_LIBRARY_PATH="$BUILD"

echo "== with herald: the library registers its tasks globally"
NATIVETASKS_LIBRARY="$BUILD/global/libnativetasks.so" "$HERALD_PYTHON" -n "$NODES" "$HERE/demo.py"

echo
echo "== without it: the library registers its tasks on the loading node only"
if NATIVETASKS_LIBRARY="$BUILD/local/libnativetasks.so" "$HERALD_PYTHON" -n "$NODES" "$HERE/demo.py"; then
    echo "run-demo.sh: expected the local-only run to fail" >&2
    exit 1
fi
echo "(failed as expected: the other nodes never loaded the library)"
