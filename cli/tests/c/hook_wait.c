/* A view hook that waits on herald: it registers globally and calls herald_wait
 * on the handle. herald.h says not to wait there; herald_wait promises to refuse
 * (HERALD_ERR_WOULD_DEADLOCK) waits that could never end instead of hanging. The
 * hook runs on whichever thread runs the event loop (the TCP I/O thread, most
 * often), so this wait can never end. Rank 0's main makes rank 2 leave (a task
 * that exits the process) so that every other rank's view changes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "herald.h"

int hook_wait_noop(const void *args, size_t len) {
    (void)args;
    (void)len;
    return 0;
}

static void hook(uint64_t epoch, uint32_t nodes, uint32_t members, void *context) {
    (void)nodes;
    (void)context;
    char tag[64];
    snprintf(tag, sizeof tag, "hook-wait-%llu", (unsigned long long)epoch);
    herald_handle handle = herald_register_global(hook_wait_noop, &members, sizeof members, tag);
    char error[512] = "";
    int rc = handle ? herald_wait(handle, error, sizeof error) : -1;
    printf("node %u: wait in view hook returned %d\n", herald_node_id(), rc);
    fflush(stdout);
    if (handle) herald_release(handle);
}

int hook_wait_install(const void *args, size_t len) {
    (void)args;
    (void)len;
    return herald_on_view_change(hook, NULL) == HERALD_OK ? 0 : 1;
}

int hook_wait_leave(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    (void)out;
    fflush(stdout);
    _exit(0);
}

int hook_wait_main(void) {
    char error[512];
    herald_handle setup = herald_register_global(hook_wait_install, "", 0, "hook-wait-setup");
    if (herald_wait(setup, error, sizeof error) != HERALD_OK) { printf("setup: %s\n", error); return 1; }
    herald_release(setup);
    herald_handle task = herald_register_task("hookwait.leave", hook_wait_leave);
    if (herald_wait(task, error, sizeof error) != HERALD_OK) { printf("task: %s\n", error); return 1; }
    herald_release(task);
    herald_handle gone = herald_launch(2, "hookwait.leave", "", 0);
    void *result = NULL;
    size_t len = 0;
    int rc = herald_task_wait(gone, &result, &len, error, sizeof error);
    printf("leave task on node 2 returned %d\n", rc);
    fflush(stdout);
    return 0;
}
