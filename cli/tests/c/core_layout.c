/* Prints the layout of herald_core.h's structs as C sees it, one "name value"
 * per line, for cli/tests/embed.rs to compare with the Rust definitions. */
#include <stddef.h>
#include <stdio.h>

#include "herald_core.h"

#define SHOW(name, value) printf("%s %zu\n", name, (size_t)(value))

int main(void) {
    SHOW("output.size", sizeof(herald_core_output));
    SHOW("output.align", _Alignof(herald_core_output));
    SHOW("output.body", offsetof(herald_core_output, transmit));
    SHOW("transmit.frame_len", offsetof(herald_core_output, transmit.frame_len) - offsetof(herald_core_output, transmit));
    SHOW("invoke.tag", offsetof(herald_core_output, invoke.tag) - offsetof(herald_core_output, invoke));
    SHOW("invoke.args_len", offsetof(herald_core_output, invoke.args_len) - offsetof(herald_core_output, invoke));
    SHOW("completed.summary", offsetof(herald_core_output, completed.summary) - offsetof(herald_core_output, completed));
    SHOW("completed.unreachable", offsetof(herald_core_output, completed.unreachable) - offsetof(herald_core_output, completed));
    SHOW("run_task.args_len", offsetof(herald_core_output, run_task.args_len) - offsetof(herald_core_output, run_task));
    SHOW("task_completed.error", offsetof(herald_core_output, task_completed.error) - offsetof(herald_core_output, task_completed));
    SHOW("peer_down.reason", offsetof(herald_core_output, peer_down.reason) - offsetof(herald_core_output, peer_down));
    SHOW("fenced.reason", offsetof(herald_core_output, fenced.reason) - offsetof(herald_core_output, fenced));
    SHOW("failure.size", sizeof(herald_core_failure));
    SHOW("failure.error", offsetof(herald_core_failure, error));
    return 0;
}
