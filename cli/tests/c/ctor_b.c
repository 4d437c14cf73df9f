/* Library B: its constructor registers a callback globally. */
#include <stdio.h>
#include "herald.h"
int callback_b(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: B callback ran\n", herald_node_id());
    fflush(stdout);
    return 0;
}
HERALD_REGISTER_ON_LOAD(callback_b, 0, 0, "library-b")
