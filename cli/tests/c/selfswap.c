/* Build A's constructor renames build B over its own path while it is being
 * loaded (SELFSWAP_FROM -> SELFSWAP_TO), then registers a callback globally:
 * the other nodes find build B at the path and must refuse, not run it. */
#include <stdio.h>
#include <stdlib.h>
#include "herald.h"
#ifndef BUILD
#define BUILD 'A'
#endif
int selfswap_callback(const void *args, size_t len) {
    (void)args; (void)len;
    printf("selfswap build=%c node=%u\n", BUILD, herald_node_id());
    fflush(stdout);
    return 0;
}
__attribute__((constructor)) static void selfswap_init(void) {
    const char *from = getenv("SELFSWAP_FROM"), *to = getenv("SELFSWAP_TO");
    if (BUILD == 'A' && from && to && rename(from, to) != 0) perror("rename");
    herald_register_on_load(selfswap_callback, 0, 0, NULL);
}
