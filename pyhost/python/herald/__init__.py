"""herald: make dynamically loaded code exist on every node of a job.

Two ways to run a program as a job:

* a stock ``python3`` with this package installed (``pip install ./pyhost``),
  started by a launcher: ``herald run -n 4 -- python3 script.py``, ``mpirun -np 4
  python3 script.py``, ``srun``, or ``python3 -m herald run -n 4 script.py``.
  ``import herald`` joins the job; every rank runs the script (SPMD); the job
  ends when every rank's program has ended (see :func:`serve` for programs that
  rank 0 drives);
* ``herald-python``, an interpreter that is a node of the job itself
  (``herald-python -n 4 script.py``): rank 0 runs the script, the other ranks
  serve it.

When the program imports a module or loads a native library that
registers tasks, herald makes every node do the same, exactly once per process,
before remote work needs it.

* :func:`import_global` imports a module in every interpreter of the job.
* :func:`register_global` runs a Python callable once on every node.
* :func:`launch` runs a callable (or a task registered by name, e.g. a native
  one) on one node and returns a :class:`Future`; :func:`task` makes a function
  a :class:`Task` with ``.launch(node, ...)``.
* :func:`load_library` loads a native library whose constructor registers
  globally, and waits until every node has it. A plain ``ctypes.CDLL`` works as
  well: the library's constructor registers with herald either way, and
  launches made afterwards run only once the registration is done on their node.

Deadlock freedom: herald's registration calls (:func:`import_global`,
:func:`register_global`) never block a thread that is executing a module's body
(it holds import locks) or running code for another global registration; see
:func:`import_global` and :func:`wait_pending`. Two calls wait wherever they are
made, because that is what they are for: :meth:`Future.result` and
:func:`load_library`; inside an import, use them only for code that does not
need that import.
"""

import ctypes
import os

from . import _herald

if not _herald.embedded():
    # Native libraries loaded with ctypes resolve their herald_* calls against
    # this extension module: that needs its symbols global, before any loads.
    ctypes.CDLL(_herald.__file__, mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)

from . import _spmd
from ._calls import Future, Task, launch, register_global, task
from ._context import at_safe_point as _at_safe_point
from ._context import pending_count as _pending_count
from ._context import settle as _settle
from ._errors import (
    GlobalImportError,
    HeraldError,
    RegistrationError,
    RemoteError,
    RemoteTraceback,
    TaskError,
)
from ._imports import import_global
from ._spmd import serve

__all__ = [
    "Future",
    "GlobalImportError",
    "HeraldError",
    "RegistrationError",
    "RemoteError",
    "RemoteTraceback",
    "Task",
    "TaskError",
    "import_global",
    "launch",
    "load_library",
    "node_id",
    "num_nodes",
    "on_view_change",
    "register_global",
    "serve",
    "stats",
    "task",
    "wait_pending",
]


def node_id():
    """This node's id, its rank in the job (0 up to ``num_nodes() - 1``); under
    herald-python rank 0 runs the program and the others serve it."""
    return _herald.node_id()


def num_nodes():
    """Number of node ids in this node's current view of the job: nodes that
    joined since the start are counted, nodes down too (every member's id is
    below it)."""
    return _herald.num_nodes()


def on_view_change(callback):
    """Calls ``callback(epoch, nodes, members)`` on every later change of this
    node's view: a node joined (its id became known here) or went down.
    ``nodes`` is what :func:`num_nodes` now returns, ``members`` those not
    down. It runs on a thread of its own."""
    if not callable(callback):
        # Refused here, as C's NULL hook is: it would otherwise fail on every
        # later view change, on the hook thread, where nobody sees it.
        raise TypeError(f"on_view_change takes a callable, not {type(callback).__name__}")
    _herald.on_view_change(callback)


def load_library(path):
    """Loads the native library at ``path`` on this node and returns it as a
    ``ctypes.CDLL``.

    Its constructors may register globally through the C ABI (``herald.h``);
    this returns once those registrations are done on every node, and raises
    :class:`HeraldError` if one failed, naming the nodes. The library must be in
    a directory every node allows: site-packages, the active virtualenv's, the
    working directory at start and the interpreter's directory (unless one is
    ``/``, the home directory or writable by anyone), ``HERALD_LIBRARY_PATH`` or
    ``herald-python --library-path DIR``.
    """
    _canonical, _digest, _registrations, loaded = _herald.load_library(os.fspath(path))
    # The loader's name for the object herald checked and loaded: opening the
    # path again could load another file put there since.
    return ctypes.CDLL(loaded)


def wait_pending():
    """Waits for the global registrations this thread started while a module
    was being imported (those never block at the call), and those that native
    libraries' constructors made while ``ctypes`` loaded them on this thread,
    and raises the first that failed. herald does this by itself at the thread's next herald call
    outside an import, at the end of a task and at the end of the program.
    Returns how many it waited for."""
    if not _at_safe_point():
        raise HeraldError(
            "wait_pending() cannot wait inside an import or inside code herald runs for a "
            "global registration: that could deadlock; call it after the import returns"
        )
    count = _pending_count()
    _settle()
    return count


def stats():
    """This node's runtime counters (registrations, invocations, tasks,
    messages and bytes sent, ...), as a dict."""
    return dict(_herald.stats())


_spmd.join()
