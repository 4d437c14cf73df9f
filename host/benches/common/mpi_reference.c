/* Open MPI reference for herald's benchmarks (host/benches/common/mpi.rs builds it
 * with mpicc and runs it with mpirun over TCP):
 *
 *   mpi_reference init                        MPI_Init + MPI_Finalize (start-up time)
 *   mpi_reference bcast_reduce BYTES ITERS WARMUP
 *       rank 0 times MPI_Bcast of BYTES from rank 0 followed by MPI_Reduce (sum)
 *       of BYTES to rank 0: the collective shape of a global registration
 *       (disseminate, then acknowledgements aggregated up the tree)
 *   mpi_reference pingpong BYTES ITERS WARMUP
 *       ranks 0 and 1 bounce a BYTES message; rank 0 times each round trip
 *
 * Rank 0 prints one line: "result median_us=M p90_us=P iters=I". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(double *samples, int n) {
    qsort(samples, (size_t)n, sizeof *samples, compare);
    printf("result median_us=%.2f p90_us=%.2f iters=%d\n", samples[n / 2] * 1e6,
           samples[n * 9 / 10] * 1e6, n);
    fflush(stdout);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc < 2 || strcmp(argv[1], "init") == 0) {
        MPI_Finalize();
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s init | bcast_reduce|pingpong BYTES ITERS WARMUP\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int bytes = atoi(argv[2]), iters = atoi(argv[3]), warmup = atoi(argv[4]);
    /* Whole ints, so the reduction can sum them. */
    int count = bytes / (int)sizeof(int) > 0 ? bytes / (int)sizeof(int) : 1;
    int *send = calloc((size_t)count, sizeof(int));
    int *recv = calloc((size_t)count, sizeof(int));
    double *samples = calloc((size_t)iters, sizeof(double));
    if (!send || !recv || !samples) MPI_Abort(MPI_COMM_WORLD, 3);
    MPI_Barrier(MPI_COMM_WORLD);
    if (strcmp(argv[1], "bcast_reduce") == 0) {
        for (int i = 0; i < warmup + iters; i++) {
            double start = MPI_Wtime();
            send[0] = i;
            MPI_Bcast(send, count, MPI_INT, 0, MPI_COMM_WORLD);
            MPI_Reduce(send, recv, count, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
            if (rank == 0 && i >= warmup) samples[i - warmup] = MPI_Wtime() - start;
        }
    } else if (strcmp(argv[1], "pingpong") == 0) {
        if (size < 2) MPI_Abort(MPI_COMM_WORLD, 4);
        for (int i = 0; i < warmup + iters; i++) {
            if (rank == 0) {
                double start = MPI_Wtime();
                MPI_Send(send, count, MPI_INT, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(recv, count, MPI_INT, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (i >= warmup) samples[i - warmup] = MPI_Wtime() - start;
            } else if (rank == 1) {
                MPI_Recv(recv, count, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(recv, count, MPI_INT, 0, 0, MPI_COMM_WORLD);
            }
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rank == 0) report(samples, iters);
    free(send);
    free(recv);
    free(samples);
    MPI_Finalize();
    return 0;
}
