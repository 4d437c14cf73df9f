/* Runs stale_output_task (cli/tests/c/stale_output.c) in a job of one, then
 * writes through the output pointer it kept: each stale write must be refused.
 * Then registers a data symbol as a callback and as a task: both refused.
 * Prints one line per check; exits with the number of failed checks. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "herald.h"

int main(int argc, char **argv) {
    if (argc < 2 || herald_init(&argc, &argv) != HERALD_OK) return 100;
    void *plugin = dlopen(argv[1], RTLD_NOW);
    if (!plugin) return 101;
    herald_output **kept = (herald_output **)dlsym(plugin, "stale_output_kept");
    char error[512] = "";
    herald_handle h =
        herald_register_task("stale.task", (herald_task_fn)dlsym(plugin, "stale_output_task"));
    if (herald_wait(h, error, sizeof error) != HERALD_OK) return 102;
    herald_release(h);
    int failures = 0;
    for (int round = 0; round < 3; round++) {
        void *result = NULL;
        size_t len = 0;
        herald_handle t = herald_launch(0, "stale.task", "result", 6);
        int code = herald_task_wait(t, &result, &len, error, sizeof error);
        int right = code == HERALD_OK && len == 13 && memcmp(result, "result-helper", 13) == 0;
        printf("%s: task result with its helper thread's bytes\n", right ? "ok" : "FAILED");
        failures += !right;
        herald_free(result);
        char big[4096];
        memset(big, 'z', sizeof big);
        code = herald_output_write(*kept, big, sizeof big);
        printf("%s: a write after the task returned is refused (%d)\n",
               code == HERALD_ERR_INVALID ? "ok" : "FAILED", code);
        failures += code != HERALD_ERR_INVALID;
    }
    /* A data symbol cast to a function: refused at registration (it would
     * crash the node that calls it), and the process still runs. */
    void *data = dlsym(plugin, "stale_output_not_code");
    herald_handle bad = herald_register_global((herald_callback)data, NULL, 0, NULL);
    int refused = herald_wait(bad, error, sizeof error);
    printf("%s: a data symbol as a callback is refused (%d: %s)\n",
           bad == 0 && refused != HERALD_OK && strstr(error, "not a function") ? "ok" : "FAILED",
           refused, error);
    failures += !(bad == 0 && refused != HERALD_OK && strstr(error, "not a function"));
    bad = herald_register_task("stale.data", (herald_task_fn)data);
    refused = herald_wait(bad, error, sizeof error);
    printf("%s: a data symbol as a task is refused (%d: %s)\n",
           bad == 0 && refused != HERALD_OK && strstr(error, "not a function") ? "ok" : "FAILED",
           refused, error);
    failures += !(bad == 0 && refused != HERALD_OK && strstr(error, "not a function"));
    int code = herald_finalize();
    printf("stale output: %d failed, finalize %d\n", failures, code);
    return failures || code;
}
