/* Two callbacks, A and B, registered at once: on every node both invocations
 * run at the same time (they meet first), then each registers the other nested
 * and waits for it. One of the two waits must be refused (it would close a
 * cycle); the other then ends, and both registrations complete.
 * cycle_task_main does the same with TA and TB, which each launch a task to
 * their own node and wait for it: each task is held until the other
 * registration is done there. */
#include <pthread.h>
#include <stdio.h>
#include "herald.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int arrived = 0;
static int arrived_tasks = 0;

int cycle_a(const void *args, size_t len);
int cycle_b(const void *args, size_t len);

/* Returns once both invocations counting on `count` are running on this node. */
static void meet(int *count) {
    pthread_mutex_lock(&lock);
    (*count)++;
    pthread_cond_broadcast(&changed);
    while (*count < 2) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
}

static void report(const char *me, const char *what_waited, int rc, const char *error) {
    const char *what = rc == HERALD_OK                  ? "ok"
                       : rc == HERALD_ERR_WOULD_DEADLOCK ? "refused"
                                                         : "FAILED";
    printf("node %u: %s: %s wait %s %s\n", herald_node_id(), me, what_waited, what, error);
    fflush(stdout);
}

static int nest_and_wait(const char *me, herald_callback other, const char *other_tag) {
    meet(&arrived);
    herald_handle h = herald_register_global(other, 0, 0, other_tag);
    char error[1024] = "";
    int rc = herald_wait(h, error, sizeof error);
    herald_release(h);
    report(me, "nested", rc, error);
    return rc == HERALD_OK || rc == HERALD_ERR_WOULD_DEADLOCK ? 0 : 1;
}

int cycle_echo(const void *args, size_t len, herald_output *out) {
    return herald_output_write(out, args, len);
}

int cycle_register_task(const void *args, size_t len) {
    (void)args; (void)len;
    herald_handle h = herald_register_task("cycle.echo", cycle_echo);
    herald_release(h);
    return h ? 0 : 1;
}
HERALD_REGISTER_ON_LOAD(cycle_register_task, 0, 0, "cycle-task")

static int launch_here_and_wait(const char *me) {
    meet(&arrived_tasks);
    herald_handle h = herald_launch(herald_node_id(), "cycle.echo", "x", 1);
    void *result = NULL;
    size_t result_len = 0;
    char error[1024] = "";
    int rc = herald_task_wait(h, &result, &result_len, error, sizeof error);
    herald_free(result);
    report(me, "task", rc, error);
    return rc == HERALD_OK || rc == HERALD_ERR_WOULD_DEADLOCK ? 0 : 1;
}

int cycle_ta(const void *args, size_t len) {
    (void)args; (void)len;
    return launch_here_and_wait("TA");
}

int cycle_tb(const void *args, size_t len) {
    (void)args; (void)len;
    return launch_here_and_wait("TB");
}

int cycle_task_main(void) {
    herald_handle a = herald_register_global(cycle_ta, 0, 0, "cycle-ta");
    herald_handle b = herald_register_global(cycle_tb, 0, 0, "cycle-tb");
    char error[1024] = "";
    int rc = herald_wait(a, error, sizeof error);
    if (rc == HERALD_OK) rc = herald_wait(b, error, sizeof error);
    herald_release(a);
    herald_release(b);
    printf("task cycle registrations: %s %s\n", rc == HERALD_OK ? "done" : "FAILED", error);
    fflush(stdout);
    return rc;
}

int cycle_a(const void *args, size_t len) {
    (void)args; (void)len;
    return nest_and_wait("A", cycle_b, "cycle-b");
}

int cycle_b(const void *args, size_t len) {
    (void)args; (void)len;
    return nest_and_wait("B", cycle_a, "cycle-a");
}

int cycle_main(void) {
    herald_handle a = herald_register_global(cycle_a, 0, 0, "cycle-a");
    herald_handle b = herald_register_global(cycle_b, 0, 0, "cycle-b");
    char error[1024] = "";
    int rc = herald_wait(a, error, sizeof error);
    if (rc == HERALD_OK) rc = herald_wait(b, error, sizeof error);
    herald_release(a);
    herald_release(b);
    printf("cycle registrations: %s %s\n", rc == HERALD_OK ? "done" : "FAILED", error);
    fflush(stdout);
    return rc;
}
