/* A callback and a task that throw (for cli/tests/faults.rs), as a C++ `throw`
 * does: an exception raised with the unwinder (_Unwind_RaiseException), which
 * C can do without a C++ compiler. Rank 0's throws_main registers
 * throws_callback (which throws on node 1 only) or, with HERALD_TEST_THROW=task,
 * launches throws_task to node 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unwind.h>
#include "herald.h"

static void throw_something(void) {
    struct _Unwind_Exception *exception = calloc(1, sizeof *exception);
    if (!exception) abort();
    memcpy(&exception->exception_class, "HRLDTEST", 8);
    _Unwind_RaiseException(exception);
    /* Nobody would catch it: the unwinder returns. */
    printf("throws: the exception was not caught\n");
    fflush(stdout);
}

int throws_callback(const void *args, size_t len) {
    (void)args; (void)len;
    if (herald_node_id() == 1) throw_something();
    return 0;
}

int throws_task(const void *args, size_t len, herald_output *out) {
    (void)args; (void)len; (void)out;
    throw_something();
    return 0;
}

int throws_main(void) {
    const char *mode = getenv("HERALD_TEST_THROW");
    char error[512] = "";
    int rc;
    if (mode && !strcmp(mode, "task")) {
        herald_handle r = herald_register_task("throws.task", throws_task);
        rc = herald_wait(r, error, sizeof error);
        herald_release(r);
        if (rc == HERALD_OK)
            rc = herald_task_wait(herald_launch(1, "throws.task", 0, 0), NULL, NULL, error,
                                  sizeof error);
    } else {
        herald_handle h = herald_register_global(throws_callback, 0, 0, NULL);
        rc = herald_wait(h, error, sizeof error);
        herald_release(h);
    }
    printf("throws: rc=%d %s\n", rc, error);
    fflush(stdout);
    return rc == HERALD_OK ? 0 : 1;
}
