/* Joiners arriving while registrations are in flight: rank 0's main starts
 * FLIGHT_FIRST registrations whose callbacks take a while, waits (without
 * waiting for them) until FLIGHT_NODES nodes are members, starts FLIGHT_SECOND
 * more, waits for all, then asks every node how often each callback ran there:
 * `node N ran: 1111...` (one digit per registration) must be all ones. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "herald.h"

#define MAX_REGS 32
static int runs[MAX_REGS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint32_t view_members = 0;

int flight_callback(const void *args, size_t len) {
    int i = -1;
    if (len == sizeof i) memcpy(&i, args, sizeof i);
    usleep(20000); /* keeps the registration in flight while joiners arrive */
    pthread_mutex_lock(&lock);
    if (i >= 0 && i < MAX_REGS) runs[i]++;
    pthread_mutex_unlock(&lock);
    return 0;
}

int flight_runs(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    char text[128];
    int n = snprintf(text, sizeof text, "node %u ran: ", herald_node_id());
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_REGS; i++) n += snprintf(text + n, sizeof text - n, "%d", runs[i]);
    pthread_mutex_unlock(&lock);
    return herald_output_write(out, text, (size_t)n);
}

int flight_register(const void *args, size_t len) {
    (void)args;
    (void)len;
    herald_register_task("flight.runs", flight_runs);
    return 0;
}
HERALD_REGISTER_ON_LOAD(flight_register, 0, 0, "flight-plugin")

static void on_view(uint64_t epoch, uint32_t nodes, uint32_t members, void *context) {
    (void)epoch;
    (void)nodes;
    (void)context;
    pthread_mutex_lock(&lock);
    view_members = members;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static herald_handle start(int i) {
    char tag[32];
    snprintf(tag, sizeof tag, "flight-%d", i);
    return herald_register_global(flight_callback, &i, sizeof i, tag);
}

int flight_main(void) {
    int first = atoi(getenv("FLIGHT_FIRST"));
    int total = first + atoi(getenv("FLIGHT_SECOND"));
    uint32_t members = (uint32_t)atoi(getenv("FLIGHT_NODES"));
    if (total > MAX_REGS) return 2;
    pthread_mutex_lock(&lock);
    view_members = herald_node_count();
    pthread_mutex_unlock(&lock);
    if (herald_on_view_change(on_view, NULL) != HERALD_OK) return 2;
    herald_handle handles[MAX_REGS];
    for (int i = 0; i < first; i++) handles[i] = start(i);
    printf("node 0: registrations in flight, waiting for joiners\n");
    fflush(stdout);
    struct timespec deadline; /* a failure guard */
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&lock);
    int rc = 0;
    while (view_members < members && rc == 0)
        rc = pthread_cond_timedwait(&changed, &lock, &deadline);
    pthread_mutex_unlock(&lock);
    if (rc != 0) return 3;
    for (int i = first; i < total; i++) handles[i] = start(i);
    char error[2048];
    for (int i = 0; i < total; i++) {
        if (herald_wait(handles[i], error, sizeof error) != HERALD_OK) {
            printf("node 0: registration %d failed: %s\n", i, error);
            return 4;
        }
        herald_release(handles[i]);
    }
    for (uint32_t node = 0; node < members; node++) {
        void *result = NULL;
        size_t len = 0;
        herald_handle h = herald_launch(node, "flight.runs", "", 0);
        if (herald_task_wait(h, &result, &len, error, sizeof error) != HERALD_OK) {
            printf("node 0: launch to %u failed: %s\n", node, error);
            return 5;
        }
        printf("node 0: %.*s\n", (int)len, (const char *)result);
        herald_free(result);
    }
    return 0;
}
