/* Exact causality on real processes: a node that only *received* a registration
 * launches a task that must wait for it on its target. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "herald.h"

static volatile int registered = 0;

/* Slow on node 2 only: the registration is done on nodes 0 and 1 well before. */
int causal_slow(const void *args, size_t len) {
    (void)args;
    (void)len;
    if (herald_node_id() == 2) usleep(500 * 1000);
    registered = 1;
    return 0;
}

/* Task: whether this node's registration was done when the task ran. */
int causal_check(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    const char *seen = registered ? "done" : "NOT DONE";
    return herald_output_write(out, seen, strlen(seen));
}

/* Task on node 1 (which only received the registration): launches the check to
 * node 2 and returns what it saw. */
int causal_relay(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    herald_handle h = herald_launch(2, "causal.check", "", 0);
    void *result = NULL;
    size_t result_len = 0;
    char error[2048];
    if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
        herald_set_error(error);
        return 1;
    }
    int rc = herald_output_write(out, result, result_len);
    herald_free(result);
    return rc;
}

int causal_register(const void *args, size_t len) {
    (void)args;
    (void)len;
    herald_register_task("causal.check", causal_check);
    herald_register_task("causal.relay", causal_relay);
    return 0;
}
HERALD_REGISTER_ON_LOAD(causal_register, 0, 0, "causal")

/* Rank 0: registers the slow callback globally without waiting, has node 1 relay
 * a check to node 2, and prints what node 2 saw. */
int main_causal_relay(void) {
    herald_handle reg = herald_register_global(causal_slow, "", 0, "causal-slow");
    herald_handle relay = herald_launch(1, "causal.relay", "", 0);
    void *result = NULL;
    size_t result_len = 0;
    char error[2048];
    if (herald_task_wait(relay, &result, &result_len, error, sizeof error) != HERALD_OK) {
        printf("relay FAILED: %s\n", error);
        return 1;
    }
    printf("node 2 saw the registration %.*s\n", (int)result_len, (char *)result);
    fflush(stdout);
    herald_free(result);
    int rc = herald_wait(reg, error, sizeof error);
    herald_release(reg);
    return rc;
}
