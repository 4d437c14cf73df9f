/*
 * herald.h - the C ABI of herald: make dynamically loaded code exist on every
 * node of a distributed job.
 *
 * A plugin is built with plain `cc -shared -fPIC plugin.c -o libplugin.so` and
 * links nothing: the herald_* functions resolve against the process that loads
 * it, whether they come from its executable (`herald node`, herald-python, any
 * program embedding herald-host that exports them with
 * -Wl,--export-dynamic-symbol=herald_*) or from libherald.so, which a program
 * links to start herald itself with herald_init (`pkg-config --cflags --libs
 * herald` after `cargo build --release`).
 *
 * Threads: every function may be called from any thread, concurrently, except
 * herald_init and herald_finalize (once each, from the program's main thread,
 * while no other thread of the program calls herald).
 *
 * Processes: only the process that started herald is a node. A child it forks
 * without exec has a copy of the runtime but none of its threads, and shares
 * its links: there every herald call fails as outside herald
 * (HERALD_ERR_NO_RUNTIME, herald_init HERALD_ERR_INVALID; herald_wait(0, ...)
 * says the process was forked) and the parent's links are left alone.
 *
 * Registration is never blocking. A registration made while a herald callback
 * runs on this thread - including from a constructor of a library that the
 * callback's node is loading - is nested: it runs on this node only (the
 * enclosing registration already reaches every node) and the enclosing
 * registration waits for it. Waiting where it could never end returns
 * HERALD_ERR_WOULD_DEADLOCK instead of hanging (see herald_wait): never wait
 * inside a constructor.
 *
 * Code is named portably: the library's canonical path (the same on every
 * node), the SHA-256 of its file, and the symbol's name, found with dladdr. So
 * callbacks and task functions must be exported (not static) functions of a
 * shared library (a variable cast to a function pointer is refused), and libraries (and their dependencies outside the system
 * library directories) must sit in a directory every node allows
 * (HERALD_LIBRARY_PATH and --library-path, which add to the defaults: the
 * working directory and the executable's directory, unless one is /, the home
 * directory or writable by anyone).
 */
#ifndef HERALD_H
#define HERALD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A pending registration or task; 0 means the call failed (herald_wait(0, ...)
 * or herald_task_wait(0, ...) then report why). */
typedef uint64_t herald_handle;

/* Return codes. */
#define HERALD_OK 0
#define HERALD_ERR_FAILED 1         /* failed on some node; the text names them */
#define HERALD_ERR_WOULD_DEADLOCK 2 /* waiting here could never end */
#define HERALD_ERR_INVALID 3        /* NULL pointer, bad UTF-8, unknown handle, a length no buffer has */
#define HERALD_ERR_NO_RUNTIME 4     /* no runtime: before herald_init, after herald_finalize,
                                       or a plugin loaded outside any herald host */
#define HERALD_ERR_STOPPED 5        /* the runtime has stopped */

/* A registration callback: runs once per node with the registration's argument
 * bytes. Return 0 on success; otherwise call herald_set_error first. */
typedef int (*herald_callback)(const void *args, size_t args_len);

/* Where a task writes its result bytes (herald_output_write). */
typedef struct herald_output herald_output;

/* A task: argument bytes in, result bytes out. Return 0 on success.
 *
 * Callbacks and tasks report failure by their return code: a C++ exception
 * must not escape one (catch it, call herald_set_error, return non-zero).
 * herald cannot catch it: it prints which callback or task threw, and the
 * process aborts (the job then loses this node). */
typedef int (*herald_task_fn)(const void *args, size_t args_len, herald_output *out);

/* Joins the job this process was started in and starts herald's runtime:
 * collective, like MPI_Init - every rank of the job calls it, and it returns
 * once the links to every other rank are up. The job is described by the
 * environment, exactly as for `herald node`: HERALD_RANK/HERALD_SIZE, else Open
 * MPI, PMI, PMIx or Slurm; HERALD_COORDINATOR and HERALD_SECRET (or
 * HERALD_SECRET_FILE); HERALD_BIND. With no launcher at all the process is a job
 * of one node. `herald run -n N -- ./app` sets all of it. `argc` and `argv` may
 * be NULL and are left as they are. Every rank runs the program (SPMD): the same
 * registration made on several ranks runs once per node and costs O(N)
 * messages. Calling it twice, or after herald_finalize, or inside a herald host,
 * or from a herald callback, task or view hook, fails with HERALD_ERR_INVALID.
 * On failure the reason is printed to stderr and herald_wait(0, ...) reports
 * it. HERALD_LOG=info|debug logs more. */
int herald_init(int *argc, char ***argv);

/* Ends the job: collective, like MPI_Finalize - every rank calls it, and it
 * returns on each once all of them have called it. Before that it waits until
 * every registration requested and every task launched on this rank is
 * answered (released handles included), and the rank keeps serving the others.
 * Returns HERALD_ERR_FAILED (the reason on stderr and from herald_wait(0, ...))
 * if a registration that a library constructor made on this rank with nobody
 * waiting for it (a library loaded with plain dlopen) failed, if ranks went
 * down before calling it (on every surviving rank, naming them), or if the job
 * declared this rank down, also after it called it (naming who did). Afterwards
 * herald calls return HERALD_ERR_NO_RUNTIME. Not from inside a
 * herald callback, task or view hook (HERALD_ERR_WOULD_DEADLOCK). */
int herald_finalize(void);

/* Runs `callback` once on every node with a copy of `args`. `tag` (or NULL) is
 * the deduplication key; without one, the key is a digest of the callback's
 * reference and the argument bytes. Never blocks. Returns a handle to wait on
 * (herald_wait) and then release (herald_release), or 0. */
herald_handle herald_register_global(herald_callback callback, const void *args,
                                     size_t args_len, const char *tag);

/* As herald_register_global, for constructors: nothing to wait for or release.
 * Declared weak so a plugin loaded outside herald still loads, its
 * HERALD_REGISTER_ON_LOAD constructor doing nothing, as long as its other
 * herald_* calls are bound lazily (RTLD_LAZY; Python's ctypes binds with
 * RTLD_NOW, which then fails naming the first one). */
void herald_register_on_load(herald_callback callback, const void *args, size_t args_len,
                             const char *tag) __attribute__((weak));

/* Blocks until the registration is done on every node (for one made inside a
 * callback: done on this node). HERALD_OK, or an error code with the reason
 * (naming each failed node) copied into `error`. Does not release the handle.
 *
 * Returns HERALD_ERR_WOULD_DEADLOCK, with the chain that would never end in
 * `error`, instead of waiting for ever:
 *  - inside a library load (a constructor): wait after the load returns;
 *  - inside the callback of this registration, or of one it is nested in;
 *  - across threads of this node: when callbacks running at once would wait in
 *    a cycle (A waits for B, nested in A or not; B's callback waits for A, or
 *    registers A nested), the wait that would close the cycle is refused, and a
 *    callback already waiting is woken with this code if a registration nested
 *    later closes a cycle through its wait. At least one waiter of every cycle
 *    is refused; a refused callback should return, which lets the others end.
 * Waits that can end are never refused. herald_task_wait is refused the same
 * way inside a load, and inside a callback for a task launched to this node
 * that is held for a registration needing that callback (a task launched here
 * waits until every registration global here at its launch, other than the
 * launching callback's own and those enclosing it, is done here), or on a
 * node still joining the job (replaying its registrations, which include the
 * callback, before it runs any task). Cycles through other nodes are not
 * detected. */
int herald_wait(herald_handle handle, char *error, size_t error_len);

/* Releases a registration handle: every handle herald_register_global,
 * herald_register_task and herald_register_task_symbol return, once, whether or
 * not it was waited for. */
void herald_release(herald_handle handle);

/* Task names starting with "herald." are reserved for herald itself: registering
 * one fails at once (0, or HERALD_ERR_INVALID from herald_register_task_local),
 * and launching one returns a handle whose herald_task_wait is HERALD_ERR_INVALID. */

/* Registers task `name` as the exported function `function`, on every node,
 * lazily: a node loads the library the first time the task runs there.
 * Variants registered in a row share one batch: each call returns a handle to
 * that batch (release each), or 0. */
herald_handle herald_register_task(const char *name, herald_task_fn function);

/* Registers task `name` as `symbol` of the library at `library`, lazily. */
herald_handle herald_register_task_symbol(const char *name, const char *library,
                                          const char *symbol);

/* Registers task `name` as `function` on this node only: no other node hears of
 * it, so launches of `name` to another node fail there as unregistered (what a
 * runtime without global registration offers). HERALD_OK or an error code (the
 * reason: herald_wait(0, ...)). */
int herald_register_task_local(const char *name, herald_task_fn function);

/* Launches `task` on `node` with a copy of `args`. It runs there once every
 * registration requested on this node before the launch is done there. Returns
 * a handle for herald_task_wait (which releases it) or herald_task_release, or 0. */
herald_handle herald_launch(uint32_t node, const char *task, const void *args,
                            size_t args_len);

/* Waits for a task and releases its handle. On HERALD_OK, `*result` is a
 * malloc'ed copy of the result bytes (free with herald_free; NULL if empty). */
int herald_task_wait(herald_handle handle, void **result, size_t *result_len, char *error,
                     size_t error_len);

/* Releases a task handle without waiting (fire and forget): the task still runs;
 * its result is dropped when it arrives. */
void herald_task_release(herald_handle handle);

/* Frees memory herald handed out. */
void herald_free(void *pointer);

/* Appends result bytes from inside a task, to the `out` it was given, until it
 * returns (threads it waits for may write too; writes are serialised). An `out`
 * kept after the task returned is refused: HERALD_ERR_INVALID, nothing written. */
int herald_output_write(herald_output *out, const void *data, size_t len);

/* Sets the error text for the running callback or task, which then returns non-zero. */
void herald_set_error(const char *message);

/* This node's id (0 .. count-1), or UINT32_MAX outside herald. */
uint32_t herald_node_id(void);

/* Number of node ids in this node's current view of the job (nodes that joined
 * since the start included, nodes down too: every member's id is below it), or
 * 0 outside herald. */
uint32_t herald_node_count(void);

/* Called on every change of this node's view of the job: a node joined (its id
 * became known here) or went down. epoch counts the changes known here, nodes is
 * what herald_node_count() now returns, members those not down. It runs on
 * whichever thread runs herald's event loop at that moment (herald's own, its
 * transport's I/O thread, or a thread that just called herald): return quickly;
 * a herald_wait or herald_task_wait there returns HERALD_ERR_WOULD_DEADLOCK (the
 * loop that would answer it cannot run while the hook waits). */
typedef void (*herald_view_fn)(uint64_t epoch, uint32_t nodes, uint32_t members,
                               void *context);

/* Calls fn(…, context) on every later view change. HERALD_OK, HERALD_ERR_INVALID
 * for a NULL fn, or HERALD_ERR_NO_RUNTIME outside herald. */
int herald_on_view_change(herald_view_fn fn, void *context);

/* Loads a library on this node; its constructors' global registrations are
 * awaited before this returns. Called from a constructor (during another load)
 * it loads nothing and returns HERALD_ERR_WOULD_DEADLOCK: call dlopen there
 * instead, and the registrations then made are awaited with the enclosing load.
 * Called from a callback, the constructors' registrations are nested in it;
 * any that can only finish after the callback returns is not waited for. */
int herald_load_library(const char *path, char *error, size_t error_len);

#define HERALD_CONCAT_(a, b) a##b
#define HERALD_CONCAT(a, b) HERALD_CONCAT_(a, b)

/* Registers `callback` globally when this library is loaded:
 *
 *     static const char config[] = "v1";
 *     int register_my_tasks(const void *args, size_t len) { ... return 0; }
 *     HERALD_REGISTER_ON_LOAD(register_my_tasks, config, sizeof config, "my-plugin")
 *
 * On the node that loads the library the registration goes to every node; there
 * the library is loaded again, this constructor runs again inside the callback's
 * invocation, and herald recognises it as the registration already running. */
#define HERALD_REGISTER_ON_LOAD(callback, args, args_len, tag)                            \
    __attribute__((constructor)) static void HERALD_CONCAT(herald_on_load_, __LINE__)(void) { \
        if (herald_register_on_load)                                                      \
            herald_register_on_load((callback), (args), (args_len), (tag));               \
    }

#ifdef __cplusplus
}
#endif

#endif /* HERALD_H */
