"""Type stubs of the ``herald`` module (the wheel ships them with ``py.typed``;
herald-python embeds the same package).

Without the wheel installed, point a type checker at them with
``MYPYPATH=pyhost/python`` (or your editor's extra paths).
"""

import ctypes
import os
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, overload

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

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

class HeraldError(RuntimeError):
    """A herald call failed on this node."""

class RegistrationError(HeraldError):
    """A global registration failed on some nodes, or could not reach them."""

    what: str
    failures: dict[int, str]
    unreachable: list[int]
    num_nodes: int
    def __init__(
        self, what: str, failures: Mapping[int, str], unreachable: Iterable[int], num_nodes: int
    ) -> None: ...

class GlobalImportError(ImportError):
    """``import_global`` failed on some nodes; the message lists each one."""

    failures: dict[int, str]
    unreachable: list[int]
    num_nodes: int
    def __init__(
        self,
        module_name: str,
        failures: Mapping[int, str],
        unreachable: Iterable[int],
        num_nodes: int,
    ) -> None: ...

class TaskError(HeraldError):
    """A launched task produced no result (not registered there, node lost, ...)."""

    node: int
    kind: str  # "failed" | "requirement" | "unreachable"
    def __init__(self, message: str, node: int, kind: str) -> None: ...

class RemoteTraceback(Exception):
    """The traceback of an exception raised on another node (as ``__cause__``)."""

    text: str
    def __init__(self, text: str) -> None: ...

class RemoteError(HeraldError):
    """A remote exception that could not travel back as itself."""

    type_name: str
    message: str
    node: int
    remote_traceback: str
    def __init__(self, type_name: str, message: str, node: int, remote_traceback: str) -> None: ...

class Future(Generic[_T]):
    """The pending result of a launched task (made by :func:`launch` and
    :meth:`Task.launch`, not by the program)."""

    node: int
    def __init__(
        self,
        handle: object,
        node: int,
        what: str,
        decode: Callable[[bytes, int, str], _T] | None,
        after_this_import: bool = False,
    ) -> None: ...
    def result(self, timeout: float | None = None) -> _T:
        """Waits for the task and returns its result: re-raises the task's own
        exception, :class:`TaskError` if it could not run, ``TimeoutError``
        after ``timeout`` seconds (None: no limit); :class:`HeraldError` at
        once for a task launched to this node by the body of a module that
        ``import_global`` is importing on this thread (it runs after that
        import, so the wait would never end)."""
    def done(self) -> bool:
        """Whether the result has arrived (``result()`` would not wait)."""

class Task(Generic[_P, _R]):
    """A function made into a herald task by :func:`task`."""

    fn: Callable[_P, _R]
    def __init__(self, fn: Callable[_P, _R]) -> None: ...
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    def launch(self, node: int, /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]: ...
    def launch_all(self, /, *args: _P.args, **kwargs: _P.kwargs) -> list[Future[_R]]: ...

def node_id() -> int:
    """This node's id, its rank in the job (0 up to ``num_nodes() - 1``); under
    herald-python rank 0 runs the program and the others serve it."""

def num_nodes() -> int:
    """Number of node ids in this node's current view (joined nodes and nodes
    down included)."""

def on_view_change(callback: Callable[[int, int, int], object]) -> None:
    """Calls ``callback(epoch, nodes, members)`` on every later view change."""

def import_global(name: str | ModuleType, package: str | None = None) -> ModuleType:
    """Imports a module in every interpreter of the job and returns it; raises
    ``GlobalImportError`` naming each node where it failed or came from a file
    other than the one this node found (compared by SHA-256). A module's source
    is compiled once, here: a node whose file is the same at the same path runs
    that code (any other compiles the bytes it checked)."""

def register_global(fn: Callable[_P, Any], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
    """Runs ``fn(*args, **kwargs)`` once on every node and returns when all have."""

@overload
def launch(node: int, fn: str, data: bytes = b"", /) -> Future[bytes]:
    """Runs the task registered as ``fn`` (a native task, say) on ``node``."""

@overload
def launch(node: int, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]:
    """Runs ``fn(*args, **kwargs)`` on ``node``."""

def task(fn: Callable[_P, _R]) -> Task[_P, _R]:
    """Decorator: makes ``fn`` a :class:`Task`."""

def load_library(path: str | os.PathLike[str]) -> ctypes.CDLL:
    """Loads a native library here; waits for its constructors' global registrations."""

def wait_pending() -> int:
    """Waits for the registrations started on this thread inside imports, and
    those native constructors made while ctypes loaded their library here."""

def serve() -> NoReturn:
    """Stock python3 only: serve the other ranks until every rank's program has
    ended, then exit with status 0."""

def stats() -> dict[str, int]:
    """This node's runtime counters."""
