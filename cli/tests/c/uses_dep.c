/* A library whose constructor registers a callback globally, and which needs
 * libdep.so (found through LD_LIBRARY_PATH). */
#include <stdio.h>
#include "herald.h"
int dep_value(void);
int uses_dep_callback(const void *args, size_t len) {
    (void)args; (void)len;
    printf("node %u: uses_dep sees %d\n", herald_node_id(), dep_value());
    fflush(stdout);
    return 0;
}
HERALD_REGISTER_ON_LOAD(uses_dep_callback, 0, 0, "uses-dep")
