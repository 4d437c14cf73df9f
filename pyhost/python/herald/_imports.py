"""``import_global``: import a module in every interpreter of the job.

The registration is keyed by the module's name alone (tag ``python-import:NAME``),
so every node that asks for the same module asks for the same registration: the
job imports it once per node, and many ranks asking at once (replicated scripts)
cost O(N) messages in all, whoever asks first.

Three cases, by what the calling thread is doing (see ``_context``):

* top level: start the global registration, import here on this very thread
  meanwhile (so the module body runs where a plain ``import`` would have run it;
  this node's invocation waits for that import instead of doing its own), then
  wait, without the GIL, until every node has it;
* nested (a module being imported for an ``import_global``, on any node, calls
  ``import_global`` itself): import here only and return; the enclosing import
  runs on every node, where the same call does the same;
* inside an import (on the main thread, say, a module being imported calls
  ``import_global``): import here, start the registration, return without
  waiting; the wait happens at the next safe point.
"""

import importlib
import importlib.util
import sys
import threading
import types

from . import _herald

from . import _checked, _context
from ._errors import GlobalImportError, format_error

_IMPORT_PAYLOAD_PREFIX = b"import:"
_TAG_PREFIX = "python-import:"
# The registration's argument is the file the requesting node found for the
# module, and its compiled code: see ``_checked``.


# One import that herald drives at a time on this node: two at once whose
# modules import each other would deadlock (or fail) on their import locks, a
# cycle plain Python never meets with one thread.
_node_imports = threading.RLock()


def import_global(name, package=None):
    """Imports module ``name`` in every interpreter of the job and returns it.

    Returns once every node has imported it (or already had it); a module is
    imported at most once per interpreter, however many nodes ask. If it fails
    anywhere, raises :class:`herald.GlobalImportError` (an ``ImportError``)
    whose message lists each failing node with its exception and traceback. A
    node that imports the module from a file other than the one found here
    (compared by SHA-256) fails, naming both files. The module's source is
    compiled once, here, and sent: a node whose file is the same at the same
    path runs that code (see ``_checked``).
    ``name`` may be a module object, or relative with ``package`` as in
    ``importlib.import_module``. The outcome is the job's: a module's global
    import happens once per job, so asking again after a failure raises the
    same error (fix the cause, then import it here with ``importlib``).

    Called while a module is being imported, it never blocks (the thread holds
    import locks that this node's part may need): it imports the module here
    (raising, as a plain import would, if that fails), starts the global import
    and returns; the wait, and any other node's error, come at this thread's
    next herald call outside an import (or :func:`herald.wait_pending`), at the
    end of the task, or at the end of the program. Called from a module that
    is itself being imported by ``import_global`` on a node, it imports here
    only: that enclosing import runs on every node and makes the same call.
    """
    name = _module_name(name, package)
    if _context.imports_nest():
        return import_here(name)
    if _context.inside_import():
        module = import_here(name)
        record = _checked.record_of(module.__spec__)
        handle = _herald.register(_payload(name), record, _TAG_PREFIX + name)
        _context.defer(f"import_global({name!r})", handle, lambda outcome: _check(name, outcome))
        return module
    _context.settle()
    # What every node must import: the file found here, read and compiled once
    # (finding it may import the parent package, part of this node's import).
    with _context.caller_import():
        plan, argument = _checked.prepare(name, imported=_imported(name))
    # This thread's import is this node's part: the invocation here waits for it.
    claim = _herald.claim_import(name, _checked.plain(argument))
    try:
        handle = _herald.register(_payload(name), argument, _TAG_PREFIX + name)
        module, local_failure = _import_for_caller(name, claim, plan)
        outcome = handle.wait()
    finally:
        if claim is not None:
            claim.release()
    try:
        _check(name, outcome, local_failure)
    finally:
        # Registrations the module's body started (register_global) are part of
        # importing it: done before this returns.
        _context.settle()
    return module


def import_here(name):
    """Imports ``name`` in this interpreter (a no-op if it is already imported)."""
    if _imported(name):
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if not (name == missing or name.startswith(missing + ".")):
            raise
    # Not found: the file may be newer than the listing a path finder cached
    # (written within the same timestamp tick). Look again, once. (Invalidating
    # up front would re-list every directory on sys.path for every import.)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def import_for_node(name, record=b""):
    """This node's invocation of ``import_global(name)``, when no thread here is
    importing it for its own ``import_global`` (herald-python waits for that one).
    ``record`` is the file the requesting node checked (and its compiled code):
    a module file here that differs is refused before it runs; one that was
    imported here before fails the import (as a library replaced after it was
    checked does). See ``_checked``."""
    with _node_imports:
        if _imported(name):
            module, plan = sys.modules[name], None
        else:
            with _checked.Plan(name, record) as plan:
                module = import_here(name)
    if plan is not None and plan.loaded:
        return
    after = _checked.record_of(getattr(module, "__spec__", None))
    if plan is not None and plan.record:
        problem = _checked.replaced(name, plan.record, after)
    else:
        problem = _checked.mismatch(name, after, record)
    if problem is not None:
        raise ImportError(problem, name=name)


def _import_for_caller(name, claim, plan):
    """This node's part of a top-level ``import_global``, done on the caller's
    thread with ``plan`` (``_checked.prepare``). It stands for this node's
    invocation: an ``import_global`` in the module's body is nested, as it is on
    the other nodes (where registering it separately would race with their
    nested import of it)."""
    failure = None
    module = None
    try:
        with _context.caller_import(), plan:
            module = import_here(name)
    except BaseException as error:  # noqa: BLE001 - reported for this node below
        failure = format_error(error)
    if module is not None and not plan.loaded and plan.record:
        # Loaded by another loader (or another thread): the file found before
        # must still be the module's, or another one may have run.
        failure = _checked.replaced(name, plan.record, _checked.record_of(getattr(module, "__spec__", None)))
    if claim is not None:
        claim.finish(failure)
    return module, failure


def _check(name, outcome, local_failure=None):
    failures, unreachable = outcome if outcome is not None else ({}, [])
    failures = dict(failures)
    if local_failure is not None:
        failures.setdefault(_herald.node_id(), local_failure)
    if failures or unreachable:
        raise GlobalImportError(name, failures, unreachable, _herald.num_nodes()) from None


def _payload(name):
    return _IMPORT_PAYLOAD_PREFIX + name.encode()


def module_name_of(payload):
    """The module name in an import payload, or None if it is not one."""
    if payload.startswith(_IMPORT_PAYLOAD_PREFIX):
        return payload[len(_IMPORT_PAYLOAD_PREFIX) :].decode()
    return None


def _module_name(name, package):
    if isinstance(name, types.ModuleType):
        return name.__name__
    if not isinstance(name, str) or not name:
        raise TypeError(f"import_global() takes a module name or a module, not {name!r}")
    if name.startswith("."):
        return importlib.util.resolve_name(name, package)
    return name


def _imported(name):
    """Whether ``name`` is imported here already (not just being imported)."""
    module = sys.modules.get(name)
    return module is not None and not _initializing(module)


def _initializing(module):
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
