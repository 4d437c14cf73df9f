/* A constructor that registers lazy task variants directly (no callback). */
#include <string.h>
#include "herald.h"
int tasks_only_echo(const void *args, size_t len, herald_output *out) {
    return herald_output_write(out, args, len);
}
__attribute__((constructor)) static void tasks_only_init(void) {
    herald_handle h = herald_register_task("tasks_only.echo", tasks_only_echo);
    herald_release(h);
}
