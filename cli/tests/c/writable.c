/* A job started in a private working directory (allowed implicitly) that
 * becomes writable by anyone while the job runs: rank 0's main, loaded from it,
 * makes it so, then registers a task of its own library, which every node must
 * now refuse (anyone could have put that file there). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "herald.h"

int writable_task(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    return herald_output_write(out, "task ran", 8);
}

int writable_main(void) {
    const char *dir = getenv("WRITABLE_DIR");
    if (!dir || chmod(dir, 0777) != 0) return 2;
    herald_handle h = herald_register_task("writable.task", writable_task);
    char error[4096];
    int rc = herald_wait(h, error, sizeof error);
    herald_release(h);
    if (rc != HERALD_OK) {
        printf("registration failed: %s\n", error);
        return 0;
    }
    void *result = NULL;
    size_t len = 0;
    rc = herald_task_wait(herald_launch(1, "writable.task", "", 0), &result, &len, error,
                          sizeof error);
    if (rc == HERALD_OK) {
        printf("node 1: %.*s\n", (int)len, (const char *)result);
        herald_free(result);
    } else {
        printf("launch failed: %s\n", error);
    }
    return 0;
}
