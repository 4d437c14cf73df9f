"""Importing exactly the module file that ``import_global`` checked.

Every node of an ``import_global`` compares its module file with the one the
requesting node found (SHA-256). For a module loaded from Python source (the
common case, ``SourceFileLoader``) a node finds the module once, reads the file
once, and the bytes it hashes are the bytes it compiles and runs: a file that
differs is refused before any of it runs, and one replaced during the import
cannot run unchecked. The requesting node compiles the module once and sends the
code with the registration; a node whose file has the same digest at the same
path runs that code instead of compiling the same bytes again (the compile is
most of an import's CPU; on a shared machine every node paid it). A node of
another Python version or optimisation level compiles its own. The bytecode
cache (``__pycache__``) is used and written as a plain import would, except
that a cache is taken only for exactly the file that was read and hashed.

Other loaders (extension modules, bytecode-only files, zip archives, finders
other than Python's own) load as usual, their file hashed before the import
and again after it.
"""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import io
import marshal
import os
import sys
import threading
import types

from . import _herald

# A file record (see ``record_of``): this prefix, the file's SHA-256, the id of
# the node that found it (u32, little-endian) and its path; then, from the
# requesting node only, a NUL and the compiled module (``_code_blob``). Empty
# when the module has no file (built in, frozen, a namespace package).
_FILE_PREFIX = b"sha256\0"
_DIGEST_BYTES = 32
# Compiled code larger than this is not sent: every node compiles its own
# rather than every registration carrying it to N nodes.
_SHIPPED_CODE_LIMIT = 256 << 10


class Plan:
    """One herald-driven import of module ``name`` on this thread: what it must
    match (``requested``, the requesting node's file record and code, or None)
    and, once it ran, which file it loaded (``record``)."""

    def __init__(self, name, requested=None, spec=None):
        self.name = name
        self.requested = requested
        self.expected = _parse(requested)
        # The requester's spec, found and prepared beforehand (``prepare``).
        self.spec = spec
        # The record of the file this import loaded (source: the bytes it read),
        # or of the file found before loading it (other loaders).
        self.record = None
        # Whether the checked loader read and compiled the source itself: then
        # the bytes that ran are the bytes hashed, and nothing is left to check.
        self.loaded = False
        self.code = None
        self.source = None

    def __enter__(self):
        _install()
        plans = _plans()
        if self.name in plans:
            raise RuntimeError(f"herald: two imports of {self.name} at once on one thread")
        plans[self.name] = self
        return self

    def __exit__(self, *exc):
        _plans().pop(self.name, None)

    def find(self, path, target):
        """The spec to import ``self.name`` from (the finder below asks)."""
        if self.spec is not None:
            spec, self.spec = self.spec, None
            return spec
        spec = _search(self.name, path, target)
        if spec is None:
            return None
        if type(spec.loader) is importlib.machinery.SourceFileLoader and spec.origin:
            spec.loader = _CheckedSourceLoader(self.name, spec.origin, self)
            return spec
        # Another loader: its file is hashed now, and refused before it runs if
        # it is not the requester's.
        self.record = record_of(spec)
        refused = mismatch(self.name, self.record, self.requested, ran=False)
        if refused is not None:
            raise ImportError(refused, name=self.name)
        return spec


def prepare(name, imported=False):
    """The requesting node's part before it registers: finds ``name`` here,
    reads and compiles its source once (unless it is ``imported`` here already:
    then only its file is hashed). Returns (plan, argument): the plan to import
    it with, and the registration's argument (the file record, with the
    compiled code when there is some to send)."""
    spec = _find_spec(name)
    plan = Plan(name, spec=spec)
    if spec is None:
        return plan, b""
    if imported or type(spec.loader) is not importlib.machinery.SourceFileLoader or not spec.origin:
        plan.record = record_of(spec)
        return plan, plan.record
    loader = _CheckedSourceLoader(name, spec.origin, plan)
    spec.loader = loader
    try:
        plan.source, read = _read(spec.origin)
    except OSError:
        # Unreadable: the import reports it, as a plain import would.
        return plan, b""
    plan.record = _record(hashlib.sha256(plan.source).digest(), spec.origin)
    try:
        plan.code, marshalled = _compiled(loader, plan.source, read)
    except (SyntaxError, ValueError):
        # The import compiles it again and raises where a plain import would.
        return plan, plan.record
    return plan, plan.record + _code_blob(marshalled)


def record_of(spec):
    """The file a module spec loads from, as a file record, or b"" if none."""
    path = getattr(spec, "origin", None) if getattr(spec, "has_location", False) else None
    if not isinstance(path, str):
        return b""
    try:
        with open(path, "rb") as file:
            digest = hashlib.sha256(file.read()).digest()
    except OSError:
        return b""
    return _record(digest, path)


def mismatch(name, here, requested, ran=True):
    """Why the module file imported here (``here``, a file record; about to be
    imported if not ``ran``) is not the one the requesting node checked
    (``requested``), or None if it is (or either node had no file to compare)."""
    mine, theirs = _parse(here), _parse(requested)
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


def replaced(name, before, after):
    """Why the module file hashed before this node's import (``before``) is
    not the one there after it (``after``), or None if it is the same (or
    either names no file)."""
    first, then = _parse(before), _parse(after)
    if first is None or then is None or first[0] == then[0]:
        return None
    return (
        f"the file of {name}, {first[2]}, was replaced while node {_herald.node_id()} imported "
        f"it (SHA-256 {first[0].hex()[:16]}... before, {then[0].hex()[:16]}... after at "
        f"{then[2]}), so which one ran there is unknown: every node must import the same "
        "module; install new versions before the job starts or at new paths"
    )


def plain(record):
    """A file record without the compiled code the requester may have added."""
    end = record.find(b"\0", len(_FILE_PREFIX) + _DIGEST_BYTES + 4) if record else -1
    return record if end < 0 else record[:end]


class _CheckedSourceLoader(importlib.machinery.SourceFileLoader):
    """Python's source loader, but for the herald-driven import of its module
    it compiles exactly the bytes it hashed (or runs the requester's code for
    them), refusing a file that is not the requester's before it runs. Any
    later load (``importlib.reload``) is a plain one."""

    def __init__(self, fullname, path, plan):
        super().__init__(fullname, path)
        self._plan = plan

    def get_code(self, fullname):
        plan, self._plan = self._plan, None
        if plan is None or fullname != plan.name:
            return super().get_code(fullname)
        plan.loaded = True
        if plan.code is not None:
            return plan.code
        if plan.source is not None:
            source, read = plan.source, None
        else:
            source, read = _read(self.path)
        plan.record = _record(hashlib.sha256(source).digest(), self.path)
        refused = mismatch(plan.name, plan.record, plan.requested, ran=False)
        if refused is not None:
            raise ImportError(refused, name=plan.name)
        # The requester's code is this very compile if its file was at this path.
        if read is not None and plan.expected is not None and plan.expected[2] == self.path:
            shipped = _shipped_code(plan.requested)
            if shipped is not None:
                code, marshalled = shipped
                _write_cache(self, read, marshalled)
                return code
        if read is None:
            return self.source_to_code(source, self.path)
        return _compiled(self, source, read)[0]


class _Finder:
    """First on ``sys.meta_path``: hands a herald-driven import on this thread
    its plan's spec; finds nothing for any other import."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        plan = _plans().get(name)
        return None if plan is None else plan.find(path, target)

    @staticmethod
    def invalidate_caches():
        pass


_local = threading.local()
_install_lock = threading.Lock()


def _plans():
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    return plans


def _install():
    if _Finder not in sys.meta_path:
        with _install_lock:
            if _Finder not in sys.meta_path:
                sys.meta_path.insert(0, _Finder)


def _search(name, path, target):
    """What the finders after herald's find for ``name``, looking again once
    after invalidating their caches (a file newer than a path finder's cached
    listing: written within the same timestamp tick)."""
    for attempt in range(2):
        for finder in list(sys.meta_path):
            if finder is _Finder:
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(name, path, target)
            if spec is not None:
                return spec
        if attempt == 0:
            importlib.invalidate_caches()
    return None


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
            # A file newer than a path finder's cached listing (see _search).
            importlib.invalidate_caches()
    return None


def _record(digest, path):
    return _FILE_PREFIX + digest + _herald.node_id().to_bytes(4, "little") + os.fsencode(path)


def _parse(record):
    """(digest, node, path) from a file record, or None if it names no file."""
    if not record:
        return None
    head = len(_FILE_PREFIX)
    if not record.startswith(_FILE_PREFIX) or len(record) < head + _DIGEST_BYTES + 4:
        return None
    digest = record[head : head + _DIGEST_BYTES]
    node = int.from_bytes(record[head + _DIGEST_BYTES : head + _DIGEST_BYTES + 4], "little")
    path = os.fsdecode(plain(record)[head + _DIGEST_BYTES + 4 :])
    return digest, node, path


def _read(path):
    """The bytes of a module's source file and the status of the file they were
    read from (one open: a file replaced meanwhile cannot mix the two)."""
    with io.open_code(path) as file:
        return file.read(), os.fstat(file.fileno())


def _compiled(loader, source, read):
    """The code of ``source``, the bytes read from ``loader.path`` (file status
    ``read``), and its marshalled form: from the bytecode cache when that is
    valid for exactly that file, as a plain import would take it; otherwise
    compiled, and cached as a plain import would (unless bytecode is not
    written)."""
    try:
        cached = importlib.util.cache_from_source(loader.path)
    except NotImplementedError:  # no cache tag: this Python keeps no bytecode cache
        cached = None
    if cached is not None:
        found = _cached_code(cached, source, read)
        if found is not None:
            return found
    code = loader.source_to_code(source, loader.path)
    marshalled = marshal.dumps(code)
    _write_cache(loader, read, marshalled)
    return code, marshalled


def _cached_code(cached, source, read):
    """(code, marshalled) from the bytecode cache file ``cached`` if it holds
    this Python's compile of ``source``: a timestamp cache (PEP 552) made for a
    file of the same modification time and size as the one read, or a hash
    cache made from these very bytes (checked always, whatever its flags say)."""
    try:
        with open(cached, "rb") as file:
            data = file.read()
    except OSError:
        return None
    magic = importlib.util.MAGIC_NUMBER
    if len(data) < 16 or data[:4] != magic:
        return None
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1:
        if data[8:16] != importlib.util.source_hash(source):
            return None
    elif flags != 0 or data[8:16] != _stamp(read):
        return None
    try:
        code = marshal.loads(data[16:])
    except (EOFError, ValueError, TypeError):
        return None
    return (code, data[16:]) if isinstance(code, types.CodeType) else None


def _write_cache(loader, read, marshalled):
    """Writes a timestamp bytecode cache of the file read (status ``read``), as
    a plain import does after compiling, unless this Python writes none."""
    if sys.dont_write_bytecode:
        return
    try:
        cached = importlib.util.cache_from_source(loader.path)
    except NotImplementedError:
        return
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + _stamp(read)
    # set_data writes atomically and gives up quietly (read-only directories).
    loader.set_data(cached, header + marshalled)


def _stamp(read):
    """A timestamp cache's record of its source file: mtime and size, each as a
    32-bit little-endian number."""
    return (int(read.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (
        read.st_size & 0xFFFFFFFF
    ).to_bytes(4, "little")


def _code_blob(marshalled):
    """The compiled module as sent after a file record: NUL, this Python's
    bytecode magic number, its optimisation level, the marshalled code; empty
    if too large to send."""
    if len(marshalled) > _SHIPPED_CODE_LIMIT:
        return b""
    return b"\0" + importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize]) + marshalled


def _shipped_code(record):
    """(code, marshalled): the requester's compiled code in a file record, if it
    sent some that this interpreter can run as its own compile of the same
    bytes; else None."""
    if not record:
        return None
    blob = record[len(plain(record)) :]
    magic = importlib.util.MAGIC_NUMBER
    header = 1 + len(magic) + 1
    if len(blob) <= header or blob[1 : 1 + len(magic)] != magic or blob[1 + len(magic)] != sys.flags.optimize:
        return None
    try:
        code = marshal.loads(blob[header:])
    except (EOFError, ValueError, TypeError):
        return None
    return (code, blob[header:]) if isinstance(code, types.CodeType) else None
