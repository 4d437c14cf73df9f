"""What the current thread is doing, as far as waiting is concerned.

herald never blocks a thread where blocking could deadlock:

* **Inside an invocation** (a worker running an import or a registered callable
  for a global registration, or the thread of a top-level ``import_global``
  importing the module here for it): a registration made here is *nested*. The
  enclosing registration already reaches every node, where the same code makes
  the same call, so herald does the work here and returns; the enclosing
  registration completes only after it.
* **Inside an import** (the thread is executing a module's body, so it holds
  that module's import lock, and maybe its parents'): a global registration is
  started but not awaited; its wait is *deferred* to the next safe point, when
  the thread calls herald again outside any import, or its task or program ends.
  Blocking here could deadlock: the registration's invocation on this node, or
  anything it imports, may need one of those locks.

Deferred registrations are kept per thread and waited for by ``settle``.
"""

import contextlib
import sys
import threading

from . import _herald
from ._errors import add_note

# Frames of Python's import machinery: a thread with one of these on its stack
# is importing, and holds the import lock of every module it is executing.
_IMPORT_MACHINERY = frozenset(
    {"<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>"}
)

_local = threading.local()
_pending_lock = threading.Lock()
_pending = {}  # thread ident -> [Pending]


def in_invocation():
    """Whether this thread runs herald's invocation of a global registration."""
    return getattr(_local, "invocations", 0) > 0


def imports_nest():
    """Whether an ``import_global`` made now is nested: in an invocation, or in
    the import a top-level ``import_global`` does on its own thread (which
    stands for this node's invocation of that global import)."""
    return in_invocation() or getattr(_local, "caller_imports", 0) > 0


@contextlib.contextmanager
def invocation():
    """Marks this thread as running herald's invocation of a registration."""
    _local.invocations = getattr(_local, "invocations", 0) + 1
    try:
        yield
    finally:
        _local.invocations -= 1


@contextlib.contextmanager
def caller_import():
    """Marks this thread as importing for its own top-level ``import_global``."""
    _local.caller_imports = getattr(_local, "caller_imports", 0) + 1
    try:
        yield
    finally:
        _local.caller_imports -= 1


def in_caller_import():
    """Whether this thread is importing for its own top-level ``import_global``
    (its import stands for this node's part of that global import)."""
    return getattr(_local, "caller_imports", 0) > 0


def inside_import():
    """Whether this thread is executing a module's body for an import."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in _IMPORT_MACHINERY:
            return True
        frame = frame.f_back
    return False


class Pending:
    """A global registration started inside an import, to be waited for later.

    ``check(outcome)`` raises the caller-facing exception for a failed outcome.
    """

    def __init__(self, what, handle, check):
        self.what = what
        self.handle = handle
        self.check = check

    def settle(self):
        self.check(self.handle.wait())


def defer(what, handle, check):
    """Keeps a registration started on this thread for the next safe point."""
    with _pending_lock:
        _pending.setdefault(threading.get_ident(), []).append(Pending(what, handle, check))


def pending_count(all_threads=False):
    """How many deferred registrations are waiting (on this thread, or all),
    native libraries' included (see ``settle``)."""
    native = _herald.native_pending_count(all_threads)
    with _pending_lock:
        if all_threads:
            return native + sum(len(entries) for entries in _pending.values())
        return native + len(_pending.get(threading.get_ident(), ()))


def settle(all_threads=False):
    """Waits for the deferred registrations of this thread (or of every thread)
    and raises the first failure, with the others noted on it.
    Must not be called inside an import or an invocation."""
    with _pending_lock:
        if all_threads:
            entries = [entry for batch in _pending.values() for entry in batch]
            _pending.clear()
        else:
            entries = _pending.pop(threading.get_ident(), [])
    failures = []
    # Registrations that a native library's constructor made through the C ABI
    # while ctypes loaded it on this thread: nobody else waits for them.
    try:
        _herald.settle_native(all_threads)
    except Exception as error:  # noqa: BLE001 - reported below, none is lost
        failures.append(error)
    for index, entry in enumerate(entries):
        try:
            entry.settle()
        except Exception as error:  # noqa: BLE001 - reported below, none is lost
            failures.append(error)
        except BaseException:
            # Interrupted (Ctrl-C): what is not settled yet stays pending.
            with _pending_lock:
                _pending.setdefault(threading.get_ident(), [])[:0] = entries[index:]
            raise
    if failures:
        first = failures[0]
        for other in failures[1:]:
            add_note(first, f"another deferred registration also failed: {other}")
        raise first


def at_safe_point():
    """Whether this thread may block on herald now."""
    return not in_invocation() and not inside_import()
