"""The job of a stock ``python3`` that imported herald (the wheel): every rank
runs the program (SPMD), and the job ends when every rank's program has ended.

``import herald`` joins the job its launcher described in the environment
(``herald run``, ``mpirun``, ``srun``: the same variables as ``herald node``),
or runs as a job of one node without one. At interpreter exit (after the
program's own ``atexit`` handlers) each rank waits for the global
registrations still pending, then takes part in ending the job: ranks other
than 0 tell rank 0 that their program has ended and serve until the job ends;
rank 0 waits for all of them (or for their links to go down), then ends it. So
a rank whose program ends early keeps serving the ranks still running theirs,
and no rank's launches are cut short by another's exit.

Under herald-python none of this runs: the binary joined the job before Python
started, rank 0 runs the program and the others serve it.
"""

import atexit
import os
import sys
import threading

from . import _context, _herald

_lock = threading.Lock()
_ended = False


# The process that joined the job. Its children are not nodes: a fork shares
# its links (and has none of its threads), and a child started afresh (a
# subprocess, multiprocessing's spawn and forkserver workers, which import the
# main module again) inherits the job's variables, but its rank is taken.
_node_pid = None


def join():
    """Joins the job (once per process), unless herald-python already has, or
    this process is a child of the job's node (its herald calls then fail,
    saying so)."""
    global _node_pid
    if _herald.embedded():
        return
    joined, marker = _herald.join_job()
    if not joined:
        return
    _node_pid = os.getpid()
    if marker:
        os.environ[_herald.NODE_PID_ENV] = marker
    atexit.register(_at_exit)


def serve():
    """Ends this rank's part of the program: serves the other ranks until every
    rank's program has ended, then exits the process with status 0 (after the
    ``atexit`` handlers, as ``sys.exit`` would, but from any thread and without
    unwinding). For "rank 0 drives" programs under a stock Python::

        import herald
        if herald.node_id() != 0:
            herald.serve()

    Under herald-python only rank 0 runs the program, so there is nothing to
    serve from: it raises ``HeraldError``.
    """
    if _herald.embedded():
        raise _herald.HeraldError(
            "herald.serve() is for a stock python3 running every rank; in herald-python "
            "only rank 0 runs the program, and the other ranks already serve"
        )
    if os.getpid() != _node_pid:
        # Not a node: a child of one, whose herald calls fail saying why.
        _herald.node_id()
    atexit._run_exitfuncs()
    _flush()
    os._exit(0)


# The exit status of a rank the job declared down, as herald node's: herald run
# lets the rest of the job go on when a rank ends with it.
_FENCED_EXIT = 88


def end_of_program():
    """This rank's end of the job (once per process). Returns the exit status
    the process must end with instead of its own: 88 if the job declared this
    rank down; 1 if a deferred global registration failed (the error has been
    printed) or if rank 0 went down before ending the job (as herald-python's
    and ``herald node``'s ranks fail then); else 0."""
    global _ended
    with _lock:
        if _ended:
            return 0
        _ended = True
    failed = False
    try:
        _context.settle(all_threads=True)
    except Exception as error:  # noqa: BLE001 - printed; the job must still end
        sys.excepthook(type(error), error, error.__traceback__)
        failed = True
    node = _herald.node_id()
    if node != 0 and _herald.num_nodes() > 1:
        from ._calls import launch

        # Not waited for: rank 0 may end the job, and leave, before its answer
        # is sent. The end of the job (or the loss of rank 0) is what counts.
        launch(0, _arrived, node)
    problem, ending = _herald.end_of_program()
    if problem:
        print(f"herald: {problem}", file=sys.stderr)
    if ending == "fenced":
        return _FENCED_EXIT
    return 1 if failed or ending == "lost" else 0


def _arrived(node):
    """Runs on rank 0: ``node``'s program has ended."""
    _herald.arrive(node)


def _at_exit():
    if os.getpid() != _node_pid:
        # A fork of the node (os.fork) ending: the job is its parent's.
        return
    status = end_of_program()
    if status:
        # A global import started inside an import failed on some node: the
        # program fails, as it would have had it waited for it. Or rank 0 went
        # down before ending the job, or the job declared this rank down: it
        # ends as herald node does.
        _flush()
        os._exit(status)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream has nothing to flush
            pass
