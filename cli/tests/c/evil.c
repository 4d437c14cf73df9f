/* A dependency that must never be loaded: its constructor says so and leaves
 * a file behind. */
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void evil_init(void) {
    const char *marker = getenv("EVIL_MARKER");
    if (marker) {
        FILE *f = fopen(marker, "w");
        if (f) fclose(f);
    }
    printf("evil constructor ran\n");
    fflush(stdout);
}
int evil_value(void) { return 666; }
