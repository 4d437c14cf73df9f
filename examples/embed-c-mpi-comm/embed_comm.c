/*
 * An MPI program that starts herald on its own communicator: herald's frames
 * travel over MPI (shared memory, the interconnect) on a duplicate of it, beside
 * the program's own MPI messages.
 *
 *     cargo build --release --features herald-c/mpi
 *     cc -shared -fPIC -I include examples/c-plugin/plugin.c -o libexample_plugin.so
 *     mpicc examples/embed-c-mpi-comm/embed_comm.c \
 *         $(PKG_CONFIG_PATH=$PWD/target/release/pkgconfig pkg-config --cflags --libs herald) \
 *         -o embed-comm
 *     mpirun -np 4 ./embed-comm ./libexample_plugin.so
 *
 * Each rank initialises MPI (MPI_THREAD_MULTIPLE) and calls herald_init_comm on
 * MPI_COMM_WORLD. Rank 0 dlopens the plugin (its constructor registers its tasks
 * on every rank) and runs example.checksum on every rank, while every rank also
 * takes part in an MPI_Allreduce of its own; then herald_finalize, MPI_Finalize.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "herald_mpi.h"

int main(int argc, char **argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (herald_init_comm(MPI_COMM_WORLD) != HERALD_OK) { /* the reason is on stderr */
        MPI_Finalize();
        return 1;
    }
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int failures = 0;
    if (rank == 0) {
        if (argc < 2 || !dlopen(argv[1], RTLD_NOW)) {
            fprintf(stderr, "embed-comm: usage: embed-comm PLUGIN.so (%s)\n",
                    argc < 2 ? "no plugin" : dlerror());
            failures = 1;
        }
        for (uint32_t node = 0; !failures && node < herald_node_count(); node++) {
            const char text[] = "over MPI";
            herald_handle h = herald_launch(node, "example.checksum", text, strlen(text));
            void *result = NULL;
            size_t len = 0;
            char error[512];
            if (herald_task_wait(h, &result, &len, error, sizeof error) != HERALD_OK) {
                printf("node %u: FAILED: %s\n", node, error);
                failures++;
                continue;
            }
            printf("node %u: example.checksum -> %.*s\n", node, (int)len, (char *)result);
            herald_free(result);
        }
    }
    /* The program's own MPI traffic, on the communicator herald duplicated. */
    int ranks = 0, one = 1;
    MPI_Allreduce(&one, &ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("embed-comm: %s; MPI_Allreduce counted %d ranks\n",
                          failures ? "FAILED" : "every rank ran the task", ranks);
    fflush(stdout);
    int finalized = herald_finalize();
    printf("rank %d finalized herald\n", rank);
    MPI_Finalize();
    return failures || finalized != HERALD_OK ? 1 : 0;
}
