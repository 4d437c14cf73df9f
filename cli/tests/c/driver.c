/* Test driver: tasks and top-level functions for the multi-process tests.
 * Paths come from the environment. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "herald.h"

/* Task: load the library named by the argument bytes on this node. */
int driver_load(const void *args, size_t len, herald_output *out) {
    char path[4096];
    if (len >= sizeof path) return 1;
    memcpy(path, args, len);
    path[len] = 0;
    char error[1024];
    if (herald_load_library(path, error, sizeof error) != HERALD_OK) {
        herald_set_error(error);
        return 1;
    }
    return herald_output_write(out, "loaded", 6);
}

/* Task: echo with the node id. */
int driver_echo(const void *args, size_t len, herald_output *out) {
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "node %u: ", herald_node_id());
    herald_output_write(out, prefix, (size_t)n);
    return herald_output_write(out, args, len);
}

int driver_register(const void *args, size_t len) {
    (void)args; (void)len;
    herald_register_task("driver.load", driver_load);
    herald_register_task("driver.echo", driver_echo);
    return 0;
}
HERALD_REGISTER_ON_LOAD(driver_register, 0, 0, "driver")

static int wait_task(herald_handle h, const char *what) {
    void *result = NULL;
    size_t result_len = 0;
    char error[2048];
    if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
        printf("%s FAILED: %s\n", what, error);
        return 1;
    }
    printf("%s -> %.*s\n", what, (int)result_len, (char *)result);
    herald_free(result);
    return 0;
}

/* Node 1 loads library B (in a task) while node 0 loads library A. */
int main_concurrent_loads(void) {
    const char *a = getenv("DRIVER_LIB_A");
    const char *b = getenv("DRIVER_LIB_B");
    if (!a || !b) return 2;
    herald_handle remote = herald_launch(1, "driver.load", b, strlen(b));
    char error[2048];
    int rc = herald_load_library(a, error, sizeof error);
    if (rc != HERALD_OK) printf("load A FAILED: %s\n", error);
    rc |= wait_task(remote, "load B on node 1");
    for (uint32_t node = 0; node < herald_node_count(); node++) {
        rc |= wait_task(herald_launch(node, "driver.echo", "after", 5), "echo");
    }
    printf("concurrent loads: %s\n", rc == 0 ? "done" : "FAILED");
    fflush(stdout);
    return rc;
}

/* A callback that never returns on node 2 (announcing it), so the test can kill
 * node 2 in the middle of the registration. */
int driver_stall(const void *args, size_t len) {
    (void)args; (void)len;
    if (herald_node_id() == 2) {
        printf("node 2: stalling\n");
        fflush(stdout);
        for (;;) pause();
    }
    return 0;
}

int main_killed_node(void) {
    herald_handle h = herald_register_global(driver_stall, 0, 0, "stall");
    char error[2048];
    int rc = herald_wait(h, error, sizeof error);
    printf("stall registration: rc=%d %s\n", rc, rc == HERALD_OK ? "ok" : error);
    fflush(stdout);
    return rc == HERALD_ERR_FAILED && strstr(error, "unreachable nodes: 2") ? 0 : 1;
}

/* Loads library A, swaps another file over its path, then registers A's callback:
 * the other nodes find a different file and refuse it. */
int main_digest_mismatch(void) {
    const char *a = getenv("DRIVER_LIB_A");
    const char *replacement = getenv("DRIVER_REPLACEMENT");
    char error[4096];
    if (!a || !replacement) return 2;
    if (herald_load_library(a, error, sizeof error) != HERALD_OK) {
        printf("load FAILED: %s\n", error);
        return 1;
    }
    /* Before the swap: herald loaded A from the descriptor it hashed, so the
     * path names another file afterwards. */
    void *lib = dlopen(a, RTLD_NOW | RTLD_NOLOAD);
    herald_callback callback = lib ? (herald_callback)dlsym(lib, "plain_callback") : NULL;
    if (!callback) return 3;
    if (rename(replacement, a) != 0) {
        perror("rename");
        return 1;
    }
    herald_handle h = herald_register_global(callback, "x", 1, NULL);
    int rc = herald_wait(h, error, sizeof error);
    printf("mismatch registration: rc=%d %s\n", rc, error);
    fflush(stdout);
    return rc == HERALD_ERR_FAILED ? 0 : 1;
}

/* Announces readiness, waits for a line on stdin (sent after the test has thrown
 * garbage at this node's port), then checks the job still works. */
int main_after_garbage(void) {
    printf("ready for garbage\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2;
    int rc = 0;
    for (uint32_t node = 0; node < herald_node_count(); node++) {
        rc |= wait_task(herald_launch(node, "driver.echo", "still serving", 13), "echo");
    }
    printf("after garbage: %s\n", rc == 0 ? "served" : "FAILED");
    fflush(stdout);
    return rc;
}

/* Loads SWAP_COUNT libraries SWAP_DIR/libswap_NNN.so one after the other (the
 * test swaps two builds at each path meanwhile) and reports each load. */
int main_swap_loads(void) {
    const char *dir = getenv("SWAP_DIR");
    const char *count = getenv("SWAP_COUNT");
    if (!dir || !count) return 2;
    int n = atoi(count);
    for (int i = 0; i < n; i++) {
        char path[4096], error[4096];
        snprintf(path, sizeof path, "%s/libswap_%03d.so", dir, i);
        if (herald_load_library(path, error, sizeof error) == HERALD_OK) {
            printf("swap-load lib=%03d ok\n", i);
        } else {
            for (char *c = error; *c; c++) if (*c == '\n') *c = ' ';
            printf("swap-load lib=%03d failed: %s\n", i, error);
        }
        fflush(stdout);
    }
    return 0;
}
