/*
 * A process that joins a running SPMD job while rank 0 is already inside
 * herald_finalize (cli/tests/embed.rs): every rank prints `rank N: started`;
 * rank 0 then finalizes at once, the others (the joiner too) only once a line
 * arrives on stdin. Rank 0 must wait for the joiner as for any rank.
 */
#include <stdio.h>

#include "herald.h"

int main(int argc, char **argv) {
    if (herald_init(&argc, &argv) != HERALD_OK) return 2;
    unsigned me = herald_node_id();
    printf("rank %u: started\n", me);
    fflush(stdout);
    if (me != 0) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    printf("rank %u: finalizing\n", me);
    fflush(stdout);
    int rc = herald_finalize();
    printf("rank %u: finalized (%d)\n", me, rc);
    fflush(stdout);
    return rc;
}
