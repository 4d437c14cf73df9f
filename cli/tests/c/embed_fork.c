/*
 * A rank that forks (cli/tests/embed.rs runs it on 2 ranks): the child has a
 * copy of herald's runtime but none of its threads, and shares its links. Its
 * herald calls must fail saying so, and leave the parent's links alone (a
 * frame the child sealed with the parent's keys would break the parent's
 * link, and the job would declare the parent down). The parent, after the
 * child has tried everything and exited, registers and finalizes as usual.
 * Argument: the example plugin, whose example_register_tasks is the callback.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herald.h"

static int child(herald_callback callback) {
    int failures = 0;
    char error[512] = "";
    herald_handle h = herald_register_global(callback, "child", 5, NULL);
    int code = herald_wait(h, error, sizeof error);
    printf("child: register_global handle %llu, wait %d: %s\n", (unsigned long long)h, code,
           error);
    failures += h != 0 || code != HERALD_ERR_NO_RUNTIME || !strstr(error, "forked");
    error[0] = '\0';
    h = herald_launch(0, "example.reverse", "ab", 2);
    code = herald_task_wait(h, NULL, NULL, error, sizeof error);
    printf("child: launch handle %llu, wait %d: %s\n", (unsigned long long)h, code, error);
    failures += h != 0 || code != HERALD_ERR_NO_RUNTIME || !strstr(error, "forked");
    printf("child: node id %u, count %u\n", herald_node_id(), herald_node_count());
    failures += herald_node_id() != UINT32_MAX || herald_node_count() != 0;
    code = herald_finalize();
    herald_wait(0, error, sizeof error);
    printf("child: finalize %d: %s\n", code, error);
    failures += code != HERALD_ERR_NO_RUNTIME || !strstr(error, "forked");
    code = herald_init(NULL, NULL);
    herald_wait(0, error, sizeof error);
    printf("child: init %d: %s\n", code, error);
    failures += code == HERALD_OK;
    printf("child: %d failed\n", failures);
    fflush(stdout);
    return failures;
}

int main(int argc, char **argv) {
    if (argc < 2 || herald_init(&argc, &argv) != HERALD_OK) return 2;
    uint32_t me = herald_node_id();
    void *plugin = dlopen(argv[1], RTLD_NOW);
    herald_callback callback = plugin ? (herald_callback)dlsym(plugin, "example_register_tasks") : NULL;
    if (!callback) return 2;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) _exit(child(callback) ? 1 : 0);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 2;
    printf("rank %u: child exited with %d\n", me, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    static const char version[] = "example-plugin-v1";
    herald_handle h = herald_register_global(callback, version, sizeof version, "example-plugin");
    char error[512] = "";
    int code = herald_wait(h, error, sizeof error);
    herald_release(h);
    printf("rank %u: registration %d %s\n", me, code, error);
    fflush(stdout);
    code = herald_finalize() == HERALD_OK && code == HERALD_OK ? 0 : 1;
    printf("rank %u: finalized (%d)\n", me, code);
    fflush(stdout);
    return code || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
