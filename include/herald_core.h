/*
 * herald_core.h - the C API of herald's sans-IO protocol core, for runtimes that
 * carry herald's messages over their own network (MPI, active messages, ...).
 *
 * A herald_core is one process's protocol state. It does no I/O, reads no clock,
 * starts no thread and allocates nothing the caller must free except itself.
 * The caller feeds it inputs (herald_core_register, herald_core_handle_frame,
 * herald_core_invocation_finished, herald_core_peer_down, herald_core_launch,
 * herald_core_task_finished) and, after each, drains its outputs with
 * herald_core_poll until it returns HERALD_CORE_NONE: frames to send (bytes,
 * already encoded), code to invoke, requests answered, tasks to run, task results.
 *
 * Link libherald.so (`pkg-config --cflags --libs herald`); the core API needs no
 * herald_init and starts no runtime. The header needs C11 (an anonymous union)
 * or C++.
 *
 * Ownership: every pointer in a herald_core_output is owned by the core and
 * valid until the next call of any herald_core_* function on the same core;
 * copy what you keep (a frame handed to an asynchronous send, for instance).
 * Every pointer the caller passes in is only read during the call.
 *
 * Threads: a herald_core is not thread-safe. Call it from one thread at a time
 * (it may move between threads); different cores are independent.
 *
 * Errors: functions returning int give HERALD_CORE_OK or an error code, and
 * herald_core_error() tells why. A `core` that is not a live core (NULL, freed,
 * or never returned by herald_core_new) is refused unread with
 * HERALD_CORE_ERR_INVALID (herald_core_poll: HERALD_CORE_NONE): a `herald_core *`
 * is an opaque name, never reused, so a stale one never reaches a later core.
 * Bytes from the network never crash the core: an invalid frame returns
 * HERALD_CORE_ERR_PROTOCOL, and the core declares its sender down itself (a
 * correct node never sends one; a HERALD_CORE_PEER_DOWN output follows).
 *
 * Failures: the caller's transport reports a lost peer with
 * herald_core_peer_down; the core spreads the news so that every node agrees
 * (HERALD_CORE_PEER_DOWN on each: close that link), and a node that learns it
 * was declared down is fenced (HERALD_CORE_FENCED: it must stop).
 */
#ifndef HERALD_CORE_H
#define HERALD_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One process's protocol state (opaque). */
typedef struct herald_core herald_core;

/* Return codes. */
#define HERALD_CORE_OK 0
#define HERALD_CORE_ERR_INVALID 1   /* NULL pointer, bad UTF-8, node outside the job,
                                       a length no buffer has (above PTRDIFF_MAX) */
#define HERALD_CORE_ERR_UNKNOWN 2   /* an invocation or task the core is not running */
#define HERALD_CORE_ERR_TOO_LARGE 3 /* does not fit in a frame: pass large data by reference
                                       (refused on the length alone, unread) */
#define HERALD_CORE_ERR_PROTOCOL 4  /* an invalid frame: the core declared its sender down */
#define HERALD_CORE_ERR_BROKEN 5    /* a bug in herald stopped this core: free it */
#define HERALD_CORE_ERR_FENCED 6    /* this node was declared down: it takes no further part */

/* "No enclosing invocation": a top-level registration or launch. */
#define HERALD_CORE_NO_PARENT UINT64_MAX

/* Creates node `rank` of a job of `size` nodes (at most 1048576). `fanout` is
 * the number of children per node of the dissemination tree (0: the default, 4);
 * `max_frame_bytes` bounds every frame sent or accepted (0: the default, 64 MiB),
 * and must be the same on every node. Returns NULL on a bad configuration, with
 * the reason copied (NUL-terminated) into `error` if it is not NULL. */
herald_core *herald_core_new(uint32_t rank, uint32_t size, uint32_t fanout,
                             size_t max_frame_bytes, char *error, size_t error_len);

/* Frees a core (NULL, a core freed already, or any pointer herald_core_new did
 * not return, is ignored). */
void herald_core_free(herald_core *core);

/* Why the last call on `core` that returned an error failed (never NULL; valid
 * until the next call on `core`). */
const char *herald_core_error(const herald_core *core);

/* Requests a registration: `code` and `args` are opaque bytes that every node's
 * caller knows how to run (a library and symbol, a module name, ...). Its key is
 * a digest of both, or of `tag` if not NULL. With `parent` HERALD_CORE_NO_PARENT
 * the request is top-level: it runs here and on every node, and is answered for
 * the job. With `parent` the id of an invocation now executing here (called from
 * inside it), it is nested: it runs here only, and that invocation's registration
 * waits for it. Never blocks; answered by one HERALD_CORE_COMPLETED output with
 * the id stored in `*request` (if not NULL). */
int herald_core_register(herald_core *core, const void *code, size_t code_len, const void *args,
                         size_t args_len, const char *tag, uint64_t parent, uint64_t *request);

/* Feeds in one frame received from node `from` (bytes of a HERALD_CORE_TRANSMIT
 * output of that node, delivered in order). A `from` outside the job (at least
 * `size`) is HERALD_CORE_ERR_INVALID and declares nobody down. The job's
 * membership is fixed: a frame whose messages name a node outside it is invalid
 * (HERALD_CORE_ERR_PROTOCOL), so every `to` and `node` the core outputs is below
 * `size`. Messages are decoded and handled one at a time: those before an
 * invalid one are handled, and a frame takes no more memory than its largest
 * message, however many it packs. */
int herald_core_handle_frame(herald_core *core, uint32_t from, const void *frame,
                             size_t frame_len);

/* Reports that an invocation (HERALD_CORE_INVOKE) has returned: `error` NULL for
 * success, else its error text. */
int herald_core_invocation_finished(herald_core *core, uint64_t invocation, const char *error);

/* Reports that node `node` crashed or its link is lost for good; `reason` (or
 * NULL) says why. Nothing will wait for it again: the core tells every other node
 * (and `node` itself, which is then fenced). */
int herald_core_peer_down(herald_core *core, uint32_t node, const char *reason);

/* Launches task `task` with a copy of `args` on node `to`. It runs there once
 * every registration this node requested or ran before the launch is done there
 * (and fails with HERALD_CORE_TASK_REQUIREMENT_FAILED if one failed there). With
 * `parent` the id of the invocation running on the calling thread, the
 * registrations that invocation belongs to are not waited for (they cannot
 * finish before it does). Answered by one HERALD_CORE_TASK_COMPLETED output with
 * the id stored in `*launch` (if not NULL). */
int herald_core_launch(herald_core *core, uint32_t to, const char *task, const void *args,
                       size_t args_len, uint64_t parent, uint64_t *launch);

/* Reports that a task (HERALD_CORE_RUN_TASK, named by its origin and launch) has
 * finished: `error` NULL with its result bytes, or its error text. A result
 * larger than a frame is not copied: the task fails with a text saying so
 * (HERALD_CORE_TASK_FAILED at the launcher). */
int herald_core_task_finished(herald_core *core, uint32_t origin, uint64_t launch,
                              const void *result, size_t result_len, const char *error);

/* Kinds of output. */
#define HERALD_CORE_NONE 0           /* nothing to do until the next input */
#define HERALD_CORE_TRANSMIT 1       /* send `frame` to node `to` (in order per node) */
#define HERALD_CORE_INVOKE 2         /* run this code, then herald_core_invocation_finished */
#define HERALD_CORE_COMPLETED 3      /* a herald_core_register request is answered */
#define HERALD_CORE_RUN_TASK 4       /* run this task, then herald_core_task_finished */
#define HERALD_CORE_TASK_COMPLETED 5 /* a herald_core_launch is answered */
#define HERALD_CORE_PEER_DOWN 6      /* `node` is down in the job's view: send what is
                                        queued for it, then close its link */
#define HERALD_CORE_FENCED 7         /* another node declared this one down: stop */

/* How a launched task ended (task_completed.status). */
#define HERALD_CORE_TASK_OK 0
#define HERALD_CORE_TASK_FAILED 1             /* the target's caller reported an error */
#define HERALD_CORE_TASK_REQUIREMENT_FAILED 2 /* a registration it required failed there */
#define HERALD_CORE_TASK_UNREACHABLE 3        /* the target went down */

/* One node's failed invocation in a registration's report. */
typedef struct herald_core_failure {
    uint32_t node;
    const char *error; /* NUL-terminated */
} herald_core_failure;

/* One output. Only the member named by `kind` is meaningful; every pointer is
 * owned by the core and valid until the next call on it. Keys are 32 bytes. */
typedef struct herald_core_output {
    int kind;
    union {
        struct {
            uint32_t to;
            const uint8_t *frame;
            size_t frame_len;
        } transmit;
        struct {
            uint64_t invocation; /* for herald_core_invocation_finished, and as a parent */
            uint64_t parent;     /* the invocation it is nested in, or HERALD_CORE_NO_PARENT */
            const uint8_t *key;
            const uint8_t *code;
            size_t code_len;
            const uint8_t *args;
            size_t args_len;
            const char *tag; /* NULL when the registration has none */
        } invoke;
        struct {
            uint64_t request;
            const uint8_t *key;
            int global; /* 1: covers every node; 0: this node only (a nested request) */
            int ok;     /* 1 when no node failed and none was unreachable */
            const herald_core_failure *failures;
            size_t failures_len;
            const uint32_t *unreachable; /* nodes that went down before acknowledging */
            size_t unreachable_len;
            const char *summary; /* the report as one line of text */
        } completed;
        struct {
            uint32_t origin; /* with `launch`: for herald_core_task_finished */
            uint64_t launch;
            const char *task; /* NUL-terminated; task_len bytes before the NUL */
            size_t task_len;
            const uint8_t *args;
            size_t args_len;
        } run_task;
        struct {
            uint64_t launch;
            uint32_t node; /* where it was launched to */
            int status;    /* HERALD_CORE_TASK_* */
            const uint8_t *result;
            size_t result_len;
            const char *error; /* "" when status is HERALD_CORE_TASK_OK */
        } task_completed;
        struct {
            uint32_t node;
            uint32_t by; /* the node whose suspicion the job agreed on */
            const char *reason;
        } peer_down;
        struct {
            uint32_t by;
            const char *reason;
        } fenced;
    };
} herald_core_output;

/* Writes the next output into `*output` and returns its kind, or returns
 * HERALD_CORE_NONE (0) when there is nothing to do until the next input. */
int herald_core_poll(herald_core *core, herald_core_output *output);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_CORE_H */
