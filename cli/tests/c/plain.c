/* A library whose constructor does nothing: loaded explicitly, then referenced. */
#include <stdio.h>
#include "herald.h"
int plain_callback(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: plain callback ran\n", herald_node_id());
    fflush(stdout);
    return 0;
}
