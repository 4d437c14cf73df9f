/* Library A: its constructor registers a callback globally. */
#include <stdio.h>
#include "herald.h"
int callback_a(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: A callback ran\n", herald_node_id());
    fflush(stdout);
    return 0;
}
HERALD_REGISTER_ON_LOAD(callback_a, 0, 0, "library-a")
