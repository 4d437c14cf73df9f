/* Constructor registers `outer` globally; `outer` registers `inner` from inside
 * its invocation (nested). Each prints once per node. */
#include <stdio.h>
#include "herald.h"

int inner(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: inner ran\n", herald_node_id());
    fflush(stdout);
    return 0;
}

int outer(const void *args, size_t len) {
    (void)args; (void)len;
    herald_handle h = herald_register_global(inner, "i", 1, NULL);
    printf("node %u: outer ran, nested handle %s\n", herald_node_id(), h ? "ok" : "FAILED");
    fflush(stdout);
    /* Waiting for a nested registration from its parent is allowed. */
    char error[256];
    int rc = herald_wait(h, error, sizeof error);
    herald_release(h);
    return rc;
}

HERALD_REGISTER_ON_LOAD(outer, "o", 1, NULL)
