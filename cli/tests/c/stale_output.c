/* A careless task (cli/tests/embed.rs): it keeps its herald_output pointer and
 * writes through it after returning, from the program's main thread. herald
 * must refuse that write (HERALD_ERR_INVALID) instead of appending to a result
 * already handed out; a helper thread writing while the task waits for it is
 * still fine. Built as a plugin, driven by stale_output_main.c. */
#include <pthread.h>
#include <stddef.h>

#include "herald.h"

herald_output *stale_output_kept;

struct helper {
    herald_output *out;
    int code;
};

static void *helper_writes(void *arg) {
    struct helper *helper = arg;
    helper->code = herald_output_write(helper->out, "-helper", 7);
    return NULL;
}

int stale_output_task(const void *args, size_t len, herald_output *out) {
    stale_output_kept = out;
    if (herald_output_write(out, args, len) != HERALD_OK) return 1;
    struct helper helper = {out, -1};
    pthread_t thread;
    if (pthread_create(&thread, NULL, helper_writes, &helper) != 0) return 1;
    pthread_join(thread, NULL);
    return helper.code;
}

/* Data, not code: a careless cast makes it a callback or task function. */
int stale_output_not_code = 42;
