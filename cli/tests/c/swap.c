/* One of two builds (-DBUILD='A' or 'B') of a library whose constructor
 * registers a callback globally; the callback says which build ran where.
 * The test copies it once per library and patches the three digits of
 * swap_marker in each copy, so every copy says which library it is. */
#include <stdio.h>
#include "herald.h"
#ifndef BUILD
#define BUILD 'A'
#endif
const char swap_marker[] = "SWAPIDX=000";
int swap_callback(const void *args, size_t len) {
    (void)args; (void)len;
    printf("swap-ran lib=%s build=%c node=%u\n", swap_marker + 8, BUILD, herald_node_id());
    fflush(stdout);
    return 0;
}
HERALD_REGISTER_ON_LOAD(swap_callback, 0, 0, NULL)
