/* Fault-test driver: top-level functions for cli/tests/faults.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "herald.h"

/* A callback that never returns on node 2 (announcing it), so the test can stop
 * or cut off node 2 in the middle of the registration. */
int faults_stall(const void *args, size_t len) {
    (void)args; (void)len;
    if (herald_node_id() == 2) {
        printf("node 2: stalling\n");
        fflush(stdout);
        for (;;) pause();
    }
    return 0;
}

/* Registers faults_stall; succeeds if the result names node 2 unreachable. */
int main_stall(void) {
    herald_handle h = herald_register_global(faults_stall, 0, 0, "faults-stall");
    char error[4096];
    int rc = herald_wait(h, error, sizeof error);
    printf("stall registration: rc=%d %s\n", rc, rc == HERALD_OK ? "ok" : error);
    fflush(stdout);
    return rc == HERALD_ERR_FAILED && strstr(error, "unreachable nodes: 2") ? 0 : 1;
}

#define HUGE_ERROR_BYTES (70u << 20)

/* Fails on node 1 with a 70 MiB error text. */
int faults_huge_error(const void *args, size_t len) {
    (void)args; (void)len;
    if (herald_node_id() != 1) return 0;
    char *text = malloc(HUGE_ERROR_BYTES + 1);
    if (!text) return 1;
    memset(text, 'e', HUGE_ERROR_BYTES);
    text[HUGE_ERROR_BYTES] = 0;
    herald_set_error(text);
    free(text);
    return 1;
}

/* Registers faults_huge_error; prints what came back. */
int main_huge_error(void) {
    herald_handle h = herald_register_global(faults_huge_error, 0, 0, "faults-huge");
    size_t size = 1 << 20;
    char *error = calloc(1, size);
    if (!error) return 2;
    int rc = herald_wait(h, error, size);
    printf("huge error registration: rc=%d bytes=%zu\n", rc, strlen(error));
    const char *cut = strstr(error, "bytes cut]");
    printf("names node 1: %s; marked cut: %s\n",
           strstr(error, "node 1") ? "yes" : "no", cut ? "yes" : "no");
    fflush(stdout);
    int ok = rc == HERALD_ERR_FAILED && strstr(error, "node 1") && cut && strlen(error) < 16384;
    free(error);
    return ok ? 0 : 1;
}

/* main_stall, then waits for a line on stdin before returning, so the test can
 * look at the links while every rank still runs. */
int main_stall_hold(void) {
    int rc = main_stall();
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2;
    return rc;
}
