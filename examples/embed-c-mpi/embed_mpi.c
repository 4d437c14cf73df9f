/*
 * herald's sans-IO core embedded in an MPI program, the way a runtime with its
 * own messaging (Legion, Charm++, HPX, PaRSEC) would embed it: the program owns
 * the network and the threads; the core only turns inputs into outputs.
 *
 *     cargo build --release
 *     export PKG_CONFIG_PATH=$PWD/target/release/pkgconfig
 *     mpicc examples/embed-c-mpi/embed_mpi.c $(pkg-config --cflags --libs herald) -o embed-c-mpi
 *     mpirun -np 4 ./embed-c-mpi
 *
 * herald's frames travel with MPI_Isend/MPI_Irecv on a communicator of their own
 * (MPI_Comm_dup), so they never match the application's receives. Rank 0
 * registers the callback "hello" globally and launches the task "square" on
 * every rank; the core runs "hello" once on every rank, and each "square" only
 * after "hello" ran where it runs. Code is named by bytes ("hello"): each rank
 * maps the name to its own function.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald_core.h"

#define HERALD_TAG 7
#define MAX_FRAME (1 << 20)

static herald_core *core;
static MPI_Comm comm; /* herald's own communicator */
static int rank, size;
static int hello_ran, completed, answers, failures;

typedef struct {
    MPI_Request request;
    void *frame;
} pending_send;
static pending_send *sends;
static int sends_len, sends_cap;

static void check(int code, const char *what) {
    if (code != HERALD_CORE_OK) {
        fprintf(stderr, "rank %d: %s: %s\n", rank, what, herald_core_error(core));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

/* The frame is the core's until the next call: copy it for the asynchronous send. */
static void send_frame(uint32_t to, const uint8_t *frame, size_t len) {
    if (sends_len == sends_cap) {
        sends_cap = sends_cap ? 2 * sends_cap : 16;
        sends = realloc(sends, sends_cap * sizeof *sends);
        if (!sends) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    pending_send *send = &sends[sends_len++];
    send->frame = malloc(len);
    if (!send->frame) MPI_Abort(MPI_COMM_WORLD, 1);
    memcpy(send->frame, frame, len);
    MPI_Isend(send->frame, (int)len, MPI_BYTE, (int)to, HERALD_TAG, comm, &send->request);
}

/* Frees the buffers of finished sends (all of them, waiting, if `wait`). */
static void reap_sends(int wait) {
    int kept = 0;
    for (int i = 0; i < sends_len; i++) {
        int done = 1;
        if (wait) MPI_Wait(&sends[i].request, MPI_STATUS_IGNORE);
        else MPI_Test(&sends[i].request, &done, MPI_STATUS_IGNORE);
        if (done) free(sends[i].frame);
        else sends[kept++] = sends[i];
    }
    sends_len = kept;
}

/* The registrable code of this program: "hello", run once per rank. */
static const char *invoke(const uint8_t *code, size_t code_len, const uint8_t *args, size_t len) {
    if (code_len != 5 || memcmp(code, "hello", 5) != 0) return "no such callback on this rank";
    printf("rank %d: hello callback ran with \"%.*s\"\n", rank, (int)len, (const char *)args);
    hello_ran = 1;
    return NULL;
}

/* After every input: do what the core asks until it has nothing more. */
static void drain(void) {
    herald_core_output out;
    while (herald_core_poll(core, &out) != HERALD_CORE_NONE) {
        switch (out.kind) {
        case HERALD_CORE_TRANSMIT:
            send_frame(out.transmit.to, out.transmit.frame, out.transmit.frame_len);
            break;
        case HERALD_CORE_INVOKE: {
            const char *error = invoke(out.invoke.code, out.invoke.code_len, out.invoke.args,
                                       out.invoke.args_len);
            check(herald_core_invocation_finished(core, out.invoke.invocation, error), "finish");
            break;
        }
        case HERALD_CORE_COMPLETED:
            printf("rank %d: %s on every rank: %s\n", rank,
                   out.completed.ok ? "registered" : "FAILED", out.completed.summary);
            failures += !out.completed.ok;
            completed = 1;
            break;
        case HERALD_CORE_RUN_TASK: {
            /* "square": an int in, its square out, after "hello" ran here. */
            int value = 0, result;
            memcpy(&value, out.run_task.args, out.run_task.args_len < 4 ? out.run_task.args_len : 4);
            result = hello_ran ? value * value : -1;
            check(herald_core_task_finished(core, out.run_task.origin, out.run_task.launch, &result,
                                            sizeof result, NULL),
                  "task");
            break;
        }
        case HERALD_CORE_TASK_COMPLETED: {
            int result = -1;
            if (out.task_completed.status == HERALD_CORE_TASK_OK && out.task_completed.result_len == 4)
                memcpy(&result, out.task_completed.result, 4);
            int want = (int)(out.task_completed.node + 2) * (int)(out.task_completed.node + 2);
            printf("rank %d: square on rank %u -> %d%s%s\n", rank, out.task_completed.node, result,
                   result == want ? "" : " WRONG ", out.task_completed.error);
            failures += result != want;
            answers++;
            break;
        }
        case HERALD_CORE_PEER_DOWN:
        case HERALD_CORE_FENCED:
            fprintf(stderr, "rank %d: herald lost a rank; Open MPI without ULFM cannot go on\n", rank);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char error[256];
    core = herald_core_new((uint32_t)rank, (uint32_t)size, 0, MAX_FRAME, error, sizeof error);
    if (!core) {
        fprintf(stderr, "rank %d: %s\n", rank, error);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    static uint8_t inbox[MAX_FRAME];
    MPI_Request receive;
    MPI_Irecv(inbox, MAX_FRAME, MPI_BYTE, MPI_ANY_SOURCE, HERALD_TAG, comm, &receive);

    if (rank == 0) {
        static const char args[] = "from rank 0";
        check(herald_core_register(core, "hello", 5, args, strlen(args), NULL,
                                   HERALD_CORE_NO_PARENT, NULL),
              "register");
        for (int to = 0; to < size; to++) {
            int value = to + 2;
            check(herald_core_launch(core, (uint32_t)to, "square", &value, sizeof value,
                                     HERALD_CORE_NO_PARENT, NULL),
                  "launch");
        }
    }
    drain();

    /* Progress herald until rank 0 has every answer; the other ranks serve until
     * then. A non-blocking barrier of the application's communicator says when. */
    MPI_Request barrier;
    int in_barrier = 0, finished = 0;
    while (!finished) {
        int arrived = 0;
        MPI_Status status;
        MPI_Test(&receive, &arrived, &status);
        if (arrived) {
            int len = 0;
            MPI_Get_count(&status, MPI_BYTE, &len);
            int code = herald_core_handle_frame(core, (uint32_t)status.MPI_SOURCE, inbox, (size_t)len);
            if (code != HERALD_CORE_ERR_PROTOCOL) /* then the core declared the sender down */
                check(code, "frame");
            MPI_Irecv(inbox, MAX_FRAME, MPI_BYTE, MPI_ANY_SOURCE, HERALD_TAG, comm, &receive);
            drain();
        }
        reap_sends(0);
        if (!in_barrier && (rank != 0 || (completed && answers == size))) {
            MPI_Ibarrier(MPI_COMM_WORLD, &barrier);
            in_barrier = 1;
        }
        if (in_barrier) MPI_Test(&barrier, &finished, MPI_STATUS_IGNORE);
    }
    reap_sends(1);
    MPI_Cancel(&receive);
    MPI_Wait(&receive, MPI_STATUS_IGNORE);
    herald_core_free(core);
    free(sends);
    MPI_Comm_free(&comm);

    failures += !hello_ran;
    printf("rank %d: %s\n", rank, failures ? "FAILED" : "done");
    MPI_Finalize();
    return failures ? 1 : 0;
}
