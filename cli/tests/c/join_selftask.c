/* A registration whose callback launches a task to its own node and waits for
 * it. On the job's ranks the task runs (it needs nothing but the callback's
 * own registration); on a joiner replaying the log it is held until the replay
 * ends, which waits for the callback: the wait must be refused
 * (HERALD_ERR_WOULD_DEADLOCK), not hang the join. Every node prints
 * `node N: self wait rc=R ...`. Rank 0's main registers it, waits for a 4th
 * node, then launches a task there. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "herald.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint32_t view_nodes = 0;

int selftask_echo(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    char text[64];
    int n = snprintf(text, sizeof text, "echo from node %u", herald_node_id());
    return herald_output_write(out, text, (size_t)n);
}

int selftask_register(const void *args, size_t len) {
    (void)args;
    (void)len;
    herald_register_task("selftask.echo", selftask_echo);
    return 0;
}
HERALD_REGISTER_ON_LOAD(selftask_register, 0, 0, "selftask-plugin")

int selftask_wait(const void *args, size_t len) {
    (void)args;
    (void)len;
    void *result = NULL;
    size_t result_len = 0;
    char error[2048] = "";
    herald_handle h = herald_launch(herald_node_id(), "selftask.echo", "", 0);
    int rc = herald_task_wait(h, &result, &result_len, error, sizeof error);
    printf("node %u: self wait rc=%d %.*s%s\n", herald_node_id(), rc, (int)result_len,
           result ? (const char *)result : "", error);
    fflush(stdout);
    herald_free(result);
    return 0;
}

static void on_view(uint64_t epoch, uint32_t nodes, uint32_t members, void *context) {
    (void)epoch;
    (void)members;
    (void)context;
    pthread_mutex_lock(&lock);
    view_nodes = nodes;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int selftask_main(void) {
    if (herald_on_view_change(on_view, NULL) != HERALD_OK) return 2;
    char error[2048];
    herald_handle h = herald_register_global(selftask_wait, "w", 1, "selftask-wait");
    if (herald_wait(h, error, sizeof error) != HERALD_OK) {
        printf("node 0: registration failed: %s\n", error);
        return 3;
    }
    herald_release(h);
    printf("node 0: waiting for a joiner\n");
    fflush(stdout);
    struct timespec deadline; /* a failure guard */
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&lock);
    int rc = 0;
    while (view_nodes < 4 && rc == 0) rc = pthread_cond_timedwait(&changed, &lock, &deadline);
    pthread_mutex_unlock(&lock);
    if (rc != 0) return 4;
    void *result = NULL;
    size_t result_len = 0;
    h = herald_launch(3, "selftask.echo", "", 0);
    if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
        printf("node 0: launch to node 3 failed: %s\n", error);
        return 5;
    }
    printf("node 0: %.*s\n", (int)result_len, (const char *)result);
    herald_free(result);
    return 0;
}
