/* A library whose constructor calls herald_load_library (on the library named
 * by CTOR_LOAD_INNER): refused with HERALD_ERR_WOULD_DEADLOCK on every node it
 * is loaded on, and nothing is loaded. Its task reports whether the inner
 * library is loaded on the node it runs on. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "herald.h"

__attribute__((constructor)) static void load_from_constructor(void) {
    const char *inner = getenv("CTOR_LOAD_INNER");
    if (!inner || herald_node_count() == 0) return;
    char error[1024] = "";
    int rc = herald_load_library(inner, error, sizeof error);
    printf("node %u: load from constructor rc=%d: %s\n", herald_node_id(), rc, error);
    fflush(stdout);
}

int ctor_load_probe(const void *args, size_t len, herald_output *out) {
    (void)args; (void)len;
    const char *inner = getenv("CTOR_LOAD_INNER");
    if (!inner) return 1;
    void *handle = dlopen(inner, RTLD_NOW | RTLD_NOLOAD);
    const char *answer = handle ? "inner loaded" : "inner not loaded";
    return herald_output_write(out, answer, strlen(answer));
}

int ctor_load_register(const void *args, size_t len) {
    (void)args; (void)len;
    herald_handle h = herald_register_task("ctor_load.probe", ctor_load_probe);
    herald_release(h);
    return h ? 0 : 1;
}
HERALD_REGISTER_ON_LOAD(ctor_load_register, 0, 0, "ctor-load")

int ctor_load_main(void) {
    int rc = 0;
    for (uint32_t node = 0; node < herald_node_count(); node++) {
        herald_handle h = herald_launch(node, "ctor_load.probe", 0, 0);
        void *result = NULL;
        size_t result_len = 0;
        char error[1024] = "";
        if (herald_task_wait(h, &result, &result_len, error, sizeof error) != HERALD_OK) {
            printf("probe on node %u FAILED: %s\n", node, error);
            rc = 1;
            continue;
        }
        printf("probe on node %u: %.*s\n", node, (int)result_len, (char *)result);
        herald_free(result);
    }
    fflush(stdout);
    return rc;
}
