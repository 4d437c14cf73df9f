/*
 * Misuse of libherald.so (cli/tests/embed.rs runs it as a job of one): herald
 * calls before herald_init and after herald_finalize fail with
 * HERALD_ERR_NO_RUNTIME and say why; herald_init twice is refused. Prints one
 * line per check; exits with the number of failed checks.
 */
#include <stdio.h>
#include <string.h>

#include "herald.h"

static int failures = 0;

static void check(int ok, const char *what, const char *detail) {
    printf("%s: %s%s%s\n", ok ? "ok" : "FAILED", what, detail ? " | " : "", detail ? detail : "");
    failures += !ok;
}

/* The calls a program might make with no runtime: each fails with a reason, which
 * contains `says` (what to do: call herald_init first, or that herald_finalize
 * ended herald here, where calling herald_init is refused). */
static void without_runtime(const char *when, const char *says) {
    char error[512] = "";
    char what[128];
    herald_handle h = herald_launch(0, "some.task", "x", 1);
    int code = herald_wait(h, error, sizeof error);
    snprintf(what, sizeof what, "%s: herald_launch returns 0, herald_wait(0) says no runtime", when);
    check(h == 0 && code == HERALD_ERR_NO_RUNTIME && strstr(error, says), what, error);

    error[0] = '\0';
    code = herald_task_wait(h, NULL, NULL, error, sizeof error);
    snprintf(what, sizeof what, "%s: herald_task_wait(0) says no runtime", when);
    check(code == HERALD_ERR_NO_RUNTIME && strstr(error, says), what, error);

    error[0] = '\0';
    code = herald_load_library("./libnothing.so", error, sizeof error);
    snprintf(what, sizeof what, "%s: herald_load_library", when);
    check(code == HERALD_ERR_NO_RUNTIME && error[0], what, error);

    snprintf(what, sizeof what, "%s: herald_node_id and herald_node_count", when);
    check(herald_node_id() == UINT32_MAX && herald_node_count() == 0, what, NULL);

    herald_release(12345); /* no crash, nothing to release */
    herald_task_release(12345);
}

int main(int argc, char **argv) {
    char error[512] = "";
    without_runtime("before herald_init", "call herald_init first");
    check(herald_finalize() == HERALD_ERR_NO_RUNTIME, "herald_finalize before herald_init", NULL);

    check(herald_init(&argc, &argv) == HERALD_OK, "herald_init", NULL);
    check(herald_node_id() == 0 && herald_node_count() == 1, "a job of one node", NULL);
    int code = herald_init(NULL, NULL);
    herald_wait(0, error, sizeof error);
    check(code == HERALD_ERR_INVALID && strstr(error, "already"), "herald_init twice", error);

    /* A negative length cast to size_t: no buffer is that long. Refused, not a crash. */
    char bytes[4] = "abc";
    herald_handle huge = herald_launch(0, "some.task", bytes, (size_t)-1);
    code = herald_wait(huge, error, sizeof error);
    check(huge == 0 && code == HERALD_ERR_INVALID && strstr(error, "length"),
          "herald_launch with a length no buffer has", error);

    check(herald_finalize() == HERALD_OK, "herald_finalize", NULL);
    without_runtime("after herald_finalize", "herald_finalize has ended herald in this process");
    check(herald_finalize() == HERALD_ERR_NO_RUNTIME, "herald_finalize twice", NULL);
    code = herald_init(&argc, &argv);
    herald_wait(0, error, sizeof error);
    check(code == HERALD_ERR_INVALID && strstr(error, "after herald_finalize"),
          "herald_init after herald_finalize", error);
    printf("misuse: %d failed\n", failures);
    return failures;
}
