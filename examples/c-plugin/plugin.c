/*
 * The herald example plugin: its constructor registers `example_register_tasks`
 * globally, so loading it on one node registers its tasks on every node.
 *
 *     cc -shared -fPIC -I include examples/c-plugin/plugin.c -o libexample_plugin.so
 *     herald node --load ./libexample_plugin.so --main ./libexample_plugin.so:example_main
 *
 * Tasks (argument bytes in, result bytes out):
 *   example.checksum  - FNV-1a 64-bit hash of the argument bytes, as 16 hex digits
 *   example.reverse   - the argument bytes reversed
 *   example.wordcount - the number of whitespace-separated words, in decimal
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "herald.h"

int example_checksum(const void *args, size_t len, herald_output *out) {
    const unsigned char *bytes = args;
    uint64_t hash = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        hash ^= bytes[i];
        hash *= 1099511628211ULL;
    }
    char text[17];
    snprintf(text, sizeof text, "%016" PRIx64, hash);
    return herald_output_write(out, text, 16);
}

int example_reverse(const void *args, size_t len, herald_output *out) {
    const unsigned char *bytes = args;
    for (size_t i = len; i > 0; i--) {
        if (herald_output_write(out, &bytes[i - 1], 1) != HERALD_OK) return 1;
    }
    return 0;
}

int example_wordcount(const void *args, size_t len, herald_output *out) {
    const unsigned char *bytes = args;
    size_t words = 0;
    int inside = 0;
    for (size_t i = 0; i < len; i++) {
        if (isspace(bytes[i])) {
            inside = 0;
        } else if (!inside) {
            inside = 1;
            words++;
        }
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%zu", words);
    return herald_output_write(out, text, (size_t)n);
}

/* Runs once on every node: registers the tasks there (nested, never blocking).
 * Nothing here waits for the handles (the enclosing registration does), so each
 * is released at once. */
int example_register_tasks(const void *args, size_t len) {
    (void)args;
    (void)len;
    const herald_handle handles[] = {
        herald_register_task("example.checksum", example_checksum),
        herald_register_task("example.reverse", example_reverse),
        herald_register_task("example.wordcount", example_wordcount),
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) {
        if (handles[i] == 0) {
            failed = 1;
        } else {
            herald_release(handles[i]);
        }
    }
    if (failed) {
        char error[256];
        herald_wait(0, error, sizeof error); /* why the last failing call failed */
        herald_set_error(error);
        return 1;
    }
    printf("node %u: example tasks registered\n", herald_node_id());
    fflush(stdout);
    return 0;
}

static const char version[] = "example-plugin-v1";
HERALD_REGISTER_ON_LOAD(example_register_tasks, version, sizeof version, "example-plugin")

/* A top-level function for `herald node --main`: runs every task on every node
 * and checks the answers. Returns 0 when all succeed. */
int example_main(void) {
    static const char text[] = "herald loads code everywhere";
    uint32_t nodes = herald_node_count();
    int failures = 0;
    for (uint32_t node = 0; node < nodes; node++) {
        const char *tasks[] = {"example.checksum", "example.reverse", "example.wordcount"};
        for (int t = 0; t < 3; t++) {
            herald_handle h = herald_launch(node, tasks[t], text, strlen(text));
            void *result = NULL;
            size_t result_len = 0;
            char error[512];
            if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
                printf("node %u: %s FAILED: %s\n", node, tasks[t], error);
                failures++;
                continue;
            }
            printf("node %u: %s -> %.*s\n", node, tasks[t], (int)result_len, (char *)result);
            herald_free(result);
        }
    }
    printf("example_main: %s\n", failures == 0 ? "all tasks succeeded on every node" : "FAILED");
    fflush(stdout);
    return failures == 0 ? 0 : 1;
}
