/*
 * herald_finalize on a rank the job declares down after it called it
 * (cli/tests/embed.rs): every rank prints "rank R: ready"; ranks other than 0
 * call herald_finalize at once, rank 0 only after a line on stdin. Each prints
 * "rank R: finalized (CODE): TEXT" with herald_wait(0, ...)'s text on failure.
 */
#include <stdio.h>

#include "herald.h"

int main(int argc, char **argv) {
    if (herald_init(&argc, &argv) != HERALD_OK) return 2;
    unsigned me = herald_node_id();
    printf("rank %u: ready\n", me);
    fflush(stdout);
    if (me == 0) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 2;
    } else {
        printf("rank %u: finalizing\n", me);
        fflush(stdout);
    }
    int code = herald_finalize();
    char error[1024] = "";
    if (code != HERALD_OK) herald_wait(0, error, sizeof error);
    printf("rank %u: finalized (%d): %s\n", me, code, error);
    fflush(stdout);
    return code;
}
