/* Top-level functions for cli/tests/mpi.rs: faults of a job over MPI. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "herald.h"

/* Node 2 dies (SIGKILL) inside the callback; the others succeed. */
int mpi_die_on_two(const void *args, size_t len) {
    (void)args; (void)len;
    if (herald_node_id() == 2) {
        printf("node 2: dying\n");
        fflush(stdout);
        raise(SIGKILL);
    }
    return 0;
}

/* Registers mpi_die_on_two and waits: under Open MPI the job is aborted first. */
int main_die(void) {
    herald_handle h = herald_register_global(mpi_die_on_two, 0, 0, "mpi-die");
    char error[4096];
    int rc = herald_wait(h, error, sizeof error);
    printf("die registration: rc=%d %s\n", rc, rc == HERALD_OK ? "ok" : error);
    fflush(stdout);
    return rc == HERALD_OK ? 0 : 1;
}

/* Every node runs this; node 0's main then returns 3. */
int mpi_noop(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: noop ran\n", herald_node_id());
    fflush(stdout);
    return 0;
}

int main_exit_three(void) {
    herald_handle h = herald_register_global(mpi_noop, 0, 0, "mpi-noop");
    char error[256];
    if (herald_wait(h, error, sizeof error) != HERALD_OK) return 1;
    return 3;
}
