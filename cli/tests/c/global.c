/* One global registration of a no-op callback, for the tests of many ranks and of
 * several hosts (cli/tests/scale.rs, cli/tests/faults.rs) and the scale benchmark
 * (cli/benches/scale.rs). Rank 0 runs global_main. Environment, all optional:
 *
 *   HERALD_TEST_TAG         the registration's dedup tag (lets a test pick its
 *                           coordinator: the key's home is a function of the tag)
 *   HERALD_TEST_GATE        a file: rank 0 prints "gate: waiting" once the job has
 *                           formed and registers only once the file exists
 *   HERALD_TEST_HOLD        a file: after the registration rank 0 prints
 *                           "hold: waiting" and ends the job only once it exists
 *                           (the scale benchmark samples the idle ranks meanwhile)
 *   HERALD_TEST_STALL_NODE  a rank whose callback prints "node K: in the callback"
 *   HERALD_TEST_STALL_FILE  and returns only once this file exists
 *   HERALD_TEST_REPEAT      R: after the first, R more registrations one after
 *                           another (new argument bytes each, so each is new; the
 *                           callback is quiet for them); rank 0 prints
 *                           "repeat: n=R median_us=M p90_us=P"
 *
 * Every rank's callback prints "node K: ran". Rank 0 prints the registration's
 * outcome ("registration: ok on N nodes" or "registration: rc=R ERROR") and
 * "timing: main_start_unix_us=T registration_us=D"; it returns 0 if the
 * registration succeeded, 3 if it failed naming nodes (the caller decides whether
 * that was expected), 1 otherwise. Waiting for files polls every 5 ms: these are
 * gates a test or benchmark opens, not timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "herald.h"

static long long now_us(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* Prints `announce` (if any) and waits until the file named by environment
 * variable `var` exists; returns at once when the variable is not set. */
static void wait_for_file(const char *var, const char *announce) {
    const char *path = getenv(var);
    if (!path || !*path) return;
    if (announce) {
        printf("%s\n", announce);
        fflush(stdout);
    }
    struct stat st;
    while (stat(path, &st) != 0) usleep(5000);
}

static int compare_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int global_noop(const void *args, size_t len) {
    if (len > 0) return 0; /* a repeat: quiet */
    (void)args;
    unsigned node = herald_node_id();
    const char *stall = getenv("HERALD_TEST_STALL_NODE");
    if (stall && *stall && (unsigned)atoi(stall) == node) {
        char line[64];
        snprintf(line, sizeof line, "node %u: in the callback", node);
        wait_for_file("HERALD_TEST_STALL_FILE", line);
    }
    printf("node %u: ran\n", node);
    fflush(stdout);
    return 0;
}

int global_main(void) {
    long long start = now_us(CLOCK_REALTIME);
    wait_for_file("HERALD_TEST_GATE", "gate: waiting");
    const char *tag = getenv("HERALD_TEST_TAG");
    long long began = now_us(CLOCK_MONOTONIC);
    herald_handle h = herald_register_global(global_noop, 0, 0, tag && *tag ? tag : NULL);
    char error[4096] = "";
    int rc = h ? herald_wait(h, error, sizeof error) : HERALD_ERR_INVALID;
    long long took = now_us(CLOCK_MONOTONIC) - began;
    if (h) herald_release(h);
    if (rc == HERALD_OK)
        printf("registration: ok on %u nodes\n", herald_node_count());
    else
        printf("registration: rc=%d %s\n", rc, error);
    printf("timing: main_start_unix_us=%lld registration_us=%lld\n", start, took);
    fflush(stdout);
    const char *repeat = getenv("HERALD_TEST_REPEAT");
    int repeats = repeat ? atoi(repeat) : 0;
    if (rc == HERALD_OK && repeats > 0) {
        long long *samples = calloc((size_t)repeats, sizeof *samples);
        if (!samples) return 1;
        for (int i = 0; i < repeats && rc == HERALD_OK; i++) {
            long long at = now_us(CLOCK_MONOTONIC);
            herald_handle r = herald_register_global(global_noop, &i, sizeof i, NULL);
            rc = r ? herald_wait(r, error, sizeof error) : HERALD_ERR_INVALID;
            if (r) herald_release(r);
            samples[i] = now_us(CLOCK_MONOTONIC) - at;
        }
        qsort(samples, (size_t)repeats, sizeof *samples, compare_ll);
        if (rc == HERALD_OK)
            printf("repeat: n=%d median_us=%lld p90_us=%lld\n", repeats, samples[repeats / 2],
                   samples[repeats * 9 / 10]);
        else
            printf("repeat: rc=%d %s\n", rc, error);
        fflush(stdout);
        free(samples);
    }
    wait_for_file("HERALD_TEST_HOLD", "hold: waiting");
    if (rc == HERALD_OK) return 0;
    return rc == HERALD_ERR_FAILED ? 3 : 1;
}
