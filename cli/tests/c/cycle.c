/* Two callbacks, A and B, registered at once: on every node both invocations
 * run at the same time (they meet first), then each registers the other nested
 * and waits for it. One of the two waits must be refused (it would close a
 * cycle); the other then ends, and both registrations complete. */
#include <pthread.h>
#include <stdio.h>
#include "herald.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int arrived = 0;

int cycle_a(const void *args, size_t len);
int cycle_b(const void *args, size_t len);

/* Returns once both invocations are running on this node. */
static void meet(void) {
    pthread_mutex_lock(&lock);
    arrived++;
    pthread_cond_broadcast(&changed);
    while (arrived < 2) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
}

static int nest_and_wait(const char *me, herald_callback other, const char *other_tag) {
    meet();
    herald_handle h = herald_register_global(other, 0, 0, other_tag);
    char error[1024] = "";
    int rc = herald_wait(h, error, sizeof error);
    herald_release(h);
    const char *what = rc == HERALD_OK                  ? "ok"
                       : rc == HERALD_ERR_WOULD_DEADLOCK ? "refused"
                                                         : "FAILED";
    printf("node %u: %s: nested wait %s %s\n", herald_node_id(), me, what, error);
    fflush(stdout);
    return rc == HERALD_OK || rc == HERALD_ERR_WOULD_DEADLOCK ? 0 : 1;
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
