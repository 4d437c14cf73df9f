/*
 * An SPMD program that starts herald itself: every rank runs this program, the
 * way every rank of an MPI application runs its main.
 *
 *     cc -shared -fPIC -I include examples/c-plugin/plugin.c -o libexample_plugin.so
 *     PKG_CONFIG_PATH=$PWD/target/release/pkgconfig \
 *         cc examples/embed-c/embed.c $(pkg-config --cflags --libs herald) -ldl -o embed-c
 *     herald run -n 4 -- ./embed-c ./libexample_plugin.so
 *     mpirun -np 4 -x HERALD_COORDINATOR=127.0.0.1:7700 -x HERALD_SECRET=... \
 *         ./embed-c ./libexample_plugin.so
 *
 * Rank 0 dlopens the plugin with plain dlopen: its constructor registers the
 * plugin's tasks globally, so every rank loads it and registers them. Rank 0
 * then runs every task on every rank and checks each answer. Every rank then
 * calls herald_finalize, which returns once all of them have called it: the
 * other ranks serve rank 0's tasks until then.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "herald.h"

static const char text[] = "herald loads code everywhere";

/* What the plugin's tasks should answer for `text`. */
static void expected(const char *task, char *out, size_t len) {
    if (strcmp(task, "example.checksum") == 0) {
        uint64_t hash = 1469598103934665603ULL; /* FNV-1a, as the plugin */
        for (size_t i = 0; i < strlen(text); i++) {
            hash ^= (unsigned char)text[i];
            hash *= 1099511628211ULL;
        }
        snprintf(out, len, "%016" PRIx64, hash);
    } else if (strcmp(task, "example.reverse") == 0) {
        size_t n = strlen(text);
        for (size_t i = 0; i < n && i + 1 < len; i++) out[i] = text[n - 1 - i];
        out[n < len ? n : len - 1] = '\0';
    } else {
        snprintf(out, len, "4"); /* words in `text` */
    }
}

/* Rank 0: load the plugin, run each task on each rank, check the answers. */
static int drive(const char *plugin) {
    if (!dlopen(plugin, RTLD_NOW)) {
        fprintf(stderr, "embed-c: %s\n", dlerror());
        return 1;
    }
    const char *tasks[] = {"example.checksum", "example.reverse", "example.wordcount"};
    uint32_t nodes = herald_node_count();
    int failures = 0;
    for (uint32_t node = 0; node < nodes; node++) {
        for (int t = 0; t < 3; t++) {
            herald_handle h = herald_launch(node, tasks[t], text, strlen(text));
            void *result = NULL;
            size_t result_len = 0;
            char error[512], want[64];
            if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
                printf("node %u: %s FAILED: %s\n", node, tasks[t], error);
                failures++;
                continue;
            }
            expected(tasks[t], want, sizeof want);
            int right = result_len == strlen(want) && memcmp(result, want, result_len) == 0;
            printf("node %u: %s -> %.*s (%s)\n", node, tasks[t], (int)result_len,
                   (char *)result, right ? "right" : "WRONG");
            failures += !right;
            herald_free(result);
        }
    }
    return failures;
}

int main(int argc, char **argv) {
    if (herald_init(&argc, &argv) != HERALD_OK) return 1; /* the reason is on stderr */
    uint32_t me = herald_node_id();
    int failures = 0;
    if (me == 0) {
        failures = argc < 2 ? 1 : drive(argv[1]);
        if (argc < 2) fprintf(stderr, "usage: embed-c PLUGIN.so\n");
        printf("embed-c: %s\n", failures ? "FAILED" : "every task right on every rank");
    }
    fflush(stdout);
    if (herald_finalize() != HERALD_OK) return 1;
    printf("rank %u finalized\n", me);
    return failures ? 1 : 0;
}
