/* A view hook that calls herald_finalize and herald_init (cli/tests/embed.rs):
 * both must be refused at once (HERALD_ERR_WOULD_DEADLOCK, HERALD_ERR_INVALID),
 * since the hook runs on the thread running herald's event loop, which the end
 * of the job needs. Rank 2 waits for a line on stdin (the test kills it); the
 * others call herald_finalize, and their hooks run when rank 2 goes down. Each
 * rank prints "rank R: hook: finalize F, init I" and "rank R: finalized (CODE)". */
#include <stdio.h>

#include "herald.h"

static void hook(uint64_t epoch, uint32_t nodes, uint32_t members, void *context) {
    (void)epoch;
    (void)nodes;
    (void)members;
    (void)context;
    int finalized = herald_finalize();
    int initialised = herald_init(NULL, NULL);
    printf("rank %u: hook: finalize %d, init %d\n", herald_node_id(), finalized, initialised);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (herald_init(&argc, &argv) != HERALD_OK) return 2;
    unsigned me = herald_node_id();
    if (herald_on_view_change(hook, NULL) != HERALD_OK) return 2;
    printf("rank %u: ready\n", me);
    fflush(stdout);
    if (me == 2) {
        char line[8];
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    int code = herald_finalize();
    printf("rank %u: finalized (%d)\n", me, code);
    fflush(stdout);
    return 0;
}
