#!/usr/bin/env bash
# MPI's own 64-byte broadcast + reduce against herald's global registration of a
# no-op callback over the MPI transport, in one mpirun per (N, path): N = 2, 4,
# 8, 16, over shared memory (`--mca btl vader,self`) and over TCP (`--mca btl
# tcp,self`), both with the ob1 PML. Prints MPI's figure, herald's and the ratio
# (target: herald within 3x of MPI), and where herald's time goes: a 64-byte
# round trip between two ranks' main threads through herald-mpi alone ("RTT"),
# and the same registration among N runtimes of one process, without MPI ("in
# process"). Source: host/examples/mpi_bench.rs.
#
#     scripts/bench-mpi.sh            # NODE_COUNTS="2 4" scripts/bench-mpi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
NODE_COUNTS=${NODE_COUNTS:-"2 4 8 16"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cargo build --release -q -p herald-host --features mpi --example mpi_bench
BENCH="$TARGET_DIR/release/examples/mpi_bench"

printf '%-17s %3s %9s %12s %8s %-13s %9s %16s\n' path N "MPI (us)" "herald (us)" ratio \
    "target <= 3x" "RTT (us)" "in process (us)"
for path in shm:vader,self tcp:tcp,self; do
    label=${path%%:*} btl=${path#*:}
    for n in $NODE_COUNTS; do
        line=$(timeout 600 mpirun --oversubscribe -np "$n" --mca pml ob1 --mca btl "$btl" \
            "$BENCH" "$label" | grep '^mpi-bench ')
        mpi=$(echo "$line" | sed -n 's/.*mpi_us=\([0-9.]*\).*/\1/p')
        herald=$(echo "$line" | sed -n 's/.*herald_us=\([0-9.]*\).*/\1/p')
        ratio=$(echo "$line" | sed -n 's/.*ratio=\([0-9.]*\).*/\1/p')
        rtt=$(echo "$line" | sed -n 's/.*transport_rtt_us=\([0-9.]*\).*/\1/p')
        local_us=$(echo "$line" | sed -n 's/.*in_process_us=\([0-9.]*\).*/\1/p')
        verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 3 ? "met" : "NOT met") }')
        printf '%-17s %3s %9s %12s %7sx %-13s %9s %16s\n' "$label ($btl)" "$n" "$mpi" "$herald" \
            "$ratio" "$verdict" "$rtt" "$local_us"
    done
done
