/*
 * An SPMD program on libherald.so (cli/tests/embed.rs runs it on 4 ranks): every
 * rank registers the same callback (replicated requesters), waits for it, runs
 * a task on its neighbour, and calls herald_finalize. Rank 0 then waits for a
 * line on stdin - the test sends it once every other rank has entered
 * herald_finalize - and runs a task on every rank: their runtimes must still
 * serve it.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "herald.h"

static int run(uint32_t me, uint32_t node, const char *task, const char *args) {
    void *result = NULL;
    size_t len = 0;
    char error[512];
    herald_handle h = herald_launch(node, task, args, strlen(args));
    if (herald_task_wait(h, &result, &len, error, sizeof error) != HERALD_OK) {
        printf("rank %u: %s on node %u FAILED: %s\n", me, task, node, error);
        return 1;
    }
    printf("rank %u: %s on node %u -> %.*s\n", me, task, node, (int)len, (char *)result);
    herald_free(result);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || herald_init(&argc, &argv) != HERALD_OK) return 2;
    uint32_t me = herald_node_id(), nodes = herald_node_count();
    void *plugin = dlopen(argv[1], RTLD_NOW);
    herald_callback callback = plugin ? (herald_callback)dlsym(plugin, "example_register_tasks") : NULL;
    if (!callback) {
        printf("rank %u: cannot load the plugin: %s\n", me, dlerror());
        return 2;
    }
    static const char version[] = "example-plugin-v1";
    herald_handle h = herald_register_global(callback, version, sizeof version, "example-plugin");
    char error[512];
    int failures = herald_wait(h, error, sizeof error) != HERALD_OK;
    printf("rank %u: registration %s%s\n", me, failures ? "FAILED: " : "done", failures ? error : "");
    herald_release(h);
    failures += run(me, (me + 1) % nodes, "example.checksum", "spmd");
    if (me == 0) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 2;
        for (uint32_t node = 0; node < nodes; node++)
            failures += run(me, node, "example.reverse", "finalize");
    }
    printf("rank %u: finalizing\n", me);
    fflush(stdout);
    int code = herald_finalize();
    printf("rank %u: finalized (%d)\n", me, code);
    return failures || code != HERALD_OK;
}
