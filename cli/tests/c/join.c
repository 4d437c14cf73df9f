/* Late joiners on real processes: the plugin registers its task globally from its
 * constructor; rank 0's main waits for a 4th process to join, then launches the
 * task there. JOIN_EXPECT=refused: the joiner cannot replay the plugin, so rank 0
 * waits until it is down again and checks that a launch to it fails. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "herald.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint32_t view_nodes = 0, view_members = 0;

int join_square(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    char text[64];
    int n = snprintf(text, sizeof text, "7 squared on node %u is 49", herald_node_id());
    return herald_output_write(out, text, (size_t)n);
}

int join_register(const void *args, size_t len) {
    (void)args;
    (void)len;
    herald_register_task("join.square", join_square);
    return 0;
}
HERALD_REGISTER_ON_LOAD(join_register, 0, 0, "join-plugin")

static void on_view(uint64_t epoch, uint32_t nodes, uint32_t members, void *context) {
    (void)epoch;
    (void)context;
    pthread_mutex_lock(&lock);
    view_nodes = nodes;
    view_members = members;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

/* Waits (at most 60 s, a failure guard) for a view of `nodes` ids, `members` up. */
static int wait_view(uint32_t nodes, uint32_t members) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&lock);
    int rc = 0;
    while (!(view_nodes == nodes && view_members == members) && rc == 0)
        rc = pthread_cond_timedwait(&changed, &lock, &deadline);
    int ok = view_nodes == nodes && view_members == members;
    pthread_mutex_unlock(&lock);
    return ok;
}

int join_main(void) {
    if (herald_on_view_change(on_view, NULL) != HERALD_OK) return 2;
    int refused = getenv("JOIN_EXPECT") && strcmp(getenv("JOIN_EXPECT"), "refused") == 0;
    printf("node 0: plugin registered on %u nodes, waiting for a joiner\n", herald_node_count());
    fflush(stdout);
    if (!wait_view(4, refused ? 3 : 4)) {
        fprintf(stderr, "node 0: the view never became what the test expects\n");
        return 3;
    }
    herald_handle h = herald_launch(3, "join.square", "", 0);
    void *result = NULL;
    size_t result_len = 0;
    char error[2048];
    int rc = herald_task_wait(h, &result, &result_len, error, sizeof error);
    if (refused) {
        if (rc == HERALD_OK) return 4;
        printf("node 0: launch to node 3 failed: %s\n", error);
        return 0;
    }
    if (rc != HERALD_OK) {
        fprintf(stderr, "node 0: launch to node 3 failed: %s\n", error);
        return 5;
    }
    printf("node 0: %.*s\n", (int)result_len, (const char *)result);
    herald_free(result);
    return 0;
}
