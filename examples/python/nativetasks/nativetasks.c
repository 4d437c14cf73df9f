/*
 * libnativetasks: the native half of the `nativetasks` Python package, and the
 * Legion issue #748 scenario in miniature: a Python module imported on one node
 * loads a native library whose tasks every node must be able to run.
 *
 * Built by the scripts and tests (plugins link nothing; the herald_* calls
 * resolve against herald-python, which exports them):
 *
 *     cc -shared -fPIC -I include examples/python/nativetasks/nativetasks.c \
 *        -o libnativetasks.so
 *
 * Loading it (a plain `ctypes.CDLL` in `nativetasks/__init__.py`) runs its
 * constructor, which registers `nativetasks_register` globally: herald loads the
 * library on every other node, where the constructor runs again (recognised as
 * the same registration, so it neither runs twice nor blocks) and the callback
 * registers the tasks there.
 *
 * Built with -DNATIVETASKS_LOCAL_ONLY, the constructor registers the tasks on
 * the loading node only, as a library does against a runtime that has only
 * local registration: launches to any other node then fail with herald's
 * "task ... is not registered on node N" error.
 *
 * Tasks:
 *   nativetasks.square - int64 in, its square out (little-endian int64)
 *   nativetasks.where  - the id of the node that ran it (uint32)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "herald.h"

int nativetasks_square(const void *args, size_t len, herald_output *out) {
    int64_t value;
    if (len != sizeof value) {
        herald_set_error("nativetasks.square takes one int64 (8 bytes)");
        return 1;
    }
    memcpy(&value, args, sizeof value);
    value *= value;
    return herald_output_write(out, &value, sizeof value);
}

int nativetasks_where(const void *args, size_t len, herald_output *out) {
    (void)args;
    (void)len;
    uint32_t node = herald_node_id();
    return herald_output_write(out, &node, sizeof node);
}

#ifdef NATIVETASKS_LOCAL_ONLY

/* Registers the tasks on this node only: no other node ever hears of them. */
__attribute__((constructor)) static void nativetasks_register_here(void) {
    if (herald_register_task_local("nativetasks.square", nativetasks_square) != HERALD_OK ||
        herald_register_task_local("nativetasks.where", nativetasks_where) != HERALD_OK) {
        fprintf(stderr, "nativetasks: cannot register the tasks on this node\n");
    }
}

#else

/* Runs once on every node, inside herald's invocation: the registrations it
 * makes are nested (recorded on that node, never blocking). */
int nativetasks_register(const void *args, size_t len) {
    (void)args;
    (void)len;
    herald_handle square = herald_register_task("nativetasks.square", nativetasks_square);
    herald_handle where = herald_register_task("nativetasks.where", nativetasks_where);
    if (square == 0 || where == 0) {
        char error[256];
        herald_wait(0, error, sizeof error);
        herald_set_error(error);
        return 1;
    }
    herald_release(square);
    herald_release(where);
    return 0;
}

static const char version[] = "nativetasks-v1";
HERALD_REGISTER_ON_LOAD(nativetasks_register, version, sizeof version, "nativetasks")

#endif
