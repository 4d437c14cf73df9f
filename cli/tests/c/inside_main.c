/* Rank 0 registers inside_callback (cli/tests/c/inside.c) globally and runs
 * inside_task on every rank while the other ranks are already inside
 * herald_finalize; every rank then prints "rank R: finalized (CODE)". */
#include <dlfcn.h>
#include <stdio.h>

#include "herald.h"

int main(int argc, char **argv) {
    if (argc < 2 || herald_init(&argc, &argv) != HERALD_OK) return 2;
    unsigned me = herald_node_id(), nodes = herald_node_count();
    void *plugin = dlopen(argv[1], RTLD_NOW);
    if (!plugin) return 2;
    int failures = 0;
    if (me == 0) {
        char error[512] = "";
        herald_handle h = herald_register_global(
            (herald_callback)dlsym(plugin, "inside_callback"), 0, 0, "inside");
        failures += herald_wait(h, error, sizeof error) != HERALD_OK;
        herald_release(h);
        herald_release(
            herald_register_task("inside.task", (herald_task_fn)dlsym(plugin, "inside_task")));
        for (unsigned node = 0; node < nodes; node++) {
            herald_handle t = herald_launch(node, "inside.task", "", 0);
            failures += herald_task_wait(t, NULL, NULL, error, sizeof error) != HERALD_OK;
        }
    }
    int code = herald_finalize();
    printf("rank %u: finalized (%d), %d failures\n", me, code, failures);
    fflush(stdout);
    return code || failures;
}
