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

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import types

from . import _herald

from . import _context
from ._errors import GlobalImportError, format_error

_IMPORT_PAYLOAD_PREFIX = b"import:"
_TAG_PREFIX = "python-import:"
# The registration's argument: the file the requesting node found for the module,
# as this prefix, its SHA-256, that node's id (u32, little-endian) and its path;
# empty when the module has no file there (built in, frozen, a namespace package).
_FILE_PREFIX = b"sha256\0"
_DIGEST_BYTES = 32


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
    (compared by SHA-256) fails, naming both files.
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
        handle = _herald.register(_payload(name), _file_record(module.__spec__), _TAG_PREFIX + name)
        _context.defer(f"import_global({name!r})", handle, lambda outcome: _check(name, outcome))
        return module
    _context.settle()
    # What every node must import: the file found here (finding it may import
    # the parent package, which is part of this node's import).
    with _context.caller_import():
        record = _file_record(_find_spec(name))
    # This thread's import is this node's part: the invocation here waits for it.
    claim = _herald.claim_import(name, record)
    try:
        handle = _herald.register(_payload(name), record, _TAG_PREFIX + name)
        module, local_failure = _import_for_caller(name, claim, record)
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
    ``record`` is the file the requesting node checked: a module file here that
    differs is refused before it runs; one that was imported here before, or
    replaced during the import, fails the import after it ran (as a library
    replaced after it was checked does)."""
    with _node_imports:
        # Hashed before the import too: a file that differs is refused unrun, and
        # one replaced while it was imported here is not taken for the one that ran.
        before = None if _imported(name) else _file_record(_find_spec(name))
        refused = file_mismatch(name, before or b"", record, ran=False)
        if refused is not None:
            raise ImportError(refused, name=name)
        module = import_here(name)
    after = _file_record(getattr(module, "__spec__", None))
    mismatch = _replaced(name, before, after) if before else file_mismatch(name, after, record)
    if mismatch is not None:
        raise ImportError(mismatch, name=name)


def file_mismatch(name, here, requested, ran=True):
    """Why the module file imported here (``here``, a file record; about to be
    imported if not ``ran``) is not the one the requesting node checked
    (``requested``), or None if it is (or either node had no file to compare)."""
    mine, theirs = _parse_record(here), _parse_record(requested)
    if mine is None or theirs is None or mine[0] == theirs[0]:
        return None
    (digest, _node, path), (their_digest, their_node, their_path) = mine, theirs
    verb = "imported" if ran else "would import (so it did not)"
    return (
        f"node {_herald.node_id()} {verb} {name} from {path} (SHA-256 {digest.hex()[:16]}...), "
        f"not the file node {their_node} found ({their_path}, SHA-256 {their_digest.hex()[:16]}...): "
        "every node must import the same module; install the same version on every node "
        "or import it from a shared file system that is not written to during the job"
    )


def _replaced(name, before, after):
    """Why the module file hashed before this node's import (``before``) is
    not the one there after it (``after``), or None if it is the same (or
    either names no file)."""
    first, then = _parse_record(before), _parse_record(after)
    if first is None or then is None or first[0] == then[0]:
        return None
    return (
        f"the file of {name}, {first[2]}, was replaced while node {_herald.node_id()} imported "
        f"it (SHA-256 {first[0].hex()[:16]}... before, {then[0].hex()[:16]}... after at "
        f"{then[2]}), so which one ran there is unknown: every node must import the same "
        "module; install new versions before the job starts or at new paths"
    )


def _import_for_caller(name, claim, record=None):
    """This node's part of a top-level ``import_global``, done on the caller's
    thread. It stands for this node's invocation: an ``import_global`` in the
    module's body is nested, as it is on the other nodes (where registering it
    separately would race with their nested import of it)."""
    failure = None
    module = None
    try:
        with _context.caller_import():
            module = import_here(name)
    except BaseException as error:  # noqa: BLE001 - reported for this node below
        failure = format_error(error)
    if module is not None and record is not None:
        # The file hashed before the import must still be the module's: one
        # replaced meanwhile may have run instead of the one the others check.
        failure = _replaced(name, record, _file_record(getattr(module, "__spec__", None)))
    if claim is not None:
        claim.finish(failure)
    return module, failure


def _find_spec(name):
    """The spec this node would import ``name`` from, or None if it finds none
    (the import then fails and says why)."""
    for attempt in range(2):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is not None:
            return spec
        if attempt == 0:
            # A file newer than a path finder's cached listing (see import_here).
            importlib.invalidate_caches()
    return None


def _file_record(spec):
    """The file a module spec loads from, as a registration argument (see
    ``_FILE_PREFIX``), or b"" if it loads from no file."""
    path = getattr(spec, "origin", None) if getattr(spec, "has_location", False) else None
    if not isinstance(path, str):
        return b""
    try:
        with open(path, "rb") as file:
            digest = hashlib.sha256(file.read()).digest()
    except OSError:
        return b""
    return _FILE_PREFIX + digest + _herald.node_id().to_bytes(4, "little") + os.fsencode(path)


def _parse_record(record):
    """(digest, node, path) from a file record, or None if it names no file."""
    head = len(_FILE_PREFIX)
    if not record.startswith(_FILE_PREFIX) or len(record) < head + _DIGEST_BYTES + 4:
        return None
    digest = record[head : head + _DIGEST_BYTES]
    node = int.from_bytes(record[head + _DIGEST_BYTES : head + _DIGEST_BYTES + 4], "little")
    path = os.fsdecode(record[head + _DIGEST_BYTES + 4 :])
    return digest, node, path


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
