/* Callbacks and tasks that try to start or end the job (cli/tests/embed.rs):
 * herald_finalize there must be refused (HERALD_ERR_WOULD_DEADLOCK) and
 * herald_init too (HERALD_ERR_INVALID), never wait: the end of the job waits for
 * them, and the program's main thread may already be inside herald_finalize. */
#include <stdio.h>

#include "herald.h"

int herald_init(int *argc, char ***argv);
int herald_finalize(void);

int inside_callback(const void *args, size_t len) {
    (void)args;
    (void)len;
    int finalized = herald_finalize();
    int initialised = herald_init(NULL, NULL);
    printf("node %u: callback: finalize %d, init %d\n", herald_node_id(), finalized, initialised);
    fflush(stdout);
    return 0;
}

int inside_task(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    (void)out;
    int finalized = herald_finalize();
    int initialised = herald_init(NULL, NULL);
    printf("node %u: task: finalize %d, init %d\n", herald_node_id(), finalized, initialised);
    fflush(stdout);
    return 0;
}
