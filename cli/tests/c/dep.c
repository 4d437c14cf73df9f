/* A dependency built in two versions (-DDEP_VALUE=1 or 2). */
#include <stdio.h>
#ifndef DEP_VALUE
#define DEP_VALUE 1
#endif
__attribute__((constructor)) static void dep_init(void) {
    printf("dep constructor value=%d\n", DEP_VALUE);
    fflush(stdout);
}
int dep_value(void) { return DEP_VALUE; }
