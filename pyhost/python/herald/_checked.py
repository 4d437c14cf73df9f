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
that a cache is taken only for exactly the file that was read and hashed, and
that code taken from a cache is not sent: a cache vouches for its own node's
import (as Python trusts it there), not for the others'.

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
        # The requester's spec, found and prepared beforehand (``prepare``).
        self.spec = spec
        # The record of the file this import loaded (source: the bytes it read),
        # or of the file found before loading it (other loaders).
        self.record = None
        # Whether the checked loader loaded the module: then the code that ran
        # came from the bytes hashed, and nothing is left to check.
        self.loaded = False
        # The requester's source bytes and their code (``prepare``).
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
        plan.code, marshalled, cached = _compiled(loader, plan.source, read)
    except Exception:  # noqa: BLE001 - SyntaxError, RecursionError, MemoryError...
        # The import compiles it again and raises where a plain import would.
        return plan, plan.record
    # Only code compiled from the bytes hashed travels: this node's bytecode
    # cache vouches for its own import (as Python trusts it), not the others'.
    return plan, plan.record + (b"" if cached else _code_blob(marshalled))


def record_of(spec):
    """The file a module spec loads from, as a file record, or b"" if none: its
    location, or the file its loader says it loads (a module in a zip archive)."""
    if spec is None:
        return b""
    loader = getattr(spec, "loader", None)
    try:
        if getattr(spec, "has_location", False) and isinstance(spec.origin, str):
            path = spec.origin
        else:
            path = loader.get_filename(spec.name)
        if hasattr(loader, "get_data"):
            data = loader.get_data(path)  # also reads a member of a zip archive
        else:
            with open(path, "rb") as file:
                data = file.read()
    except (AttributeError, ImportError, OSError, TypeError):
        return b""
    if not isinstance(path, str) or not isinstance(data, bytes):
        return b""
    return _record(hashlib.sha256(data).digest(), path)


def mismatch(name, here, requested, ran=True):
    """Why the module file imported here (``here``, a file record; about to be
    imported if not ``ran``) is not the one the requesting node checked
    (``requested``), or None if it is (or the requesting node had no file)."""
    mine, theirs = _parse(here), _parse(requested)
    if theirs is None or (mine is not None and mine[0] == theirs[0]):
        return None
    _their_digest, their_node, their_path = theirs
    verb = "imported" if ran else "would import (so it did not)"
    if mine is None:
        source = "no file it could hash (a namespace package, a built-in module or an unreadable file)"
    else:
        source = f"{_shown(mine[2])} (SHA-256 {mine[0].hex()[:16]}...)"
    return (
        f"node {_herald.node_id()} {verb} {name} from {source}, not the file node "
        f"{their_node} found ({_shown(their_path)}, SHA-256 {theirs[0].hex()[:16]}...): "
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
        f"the file of {name}, {_shown(first[2])}, was replaced while node {_herald.node_id()} "
        f"imported it (SHA-256 {first[0].hex()[:16]}... before, {then[0].hex()[:16]}... after at "
        f"{_shown(then[2])}), so which one ran there is unknown: every node must import the "
        "same module; install new versions before the job starts or at new paths"
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
        expected = _parse(plan.requested)
        if read is not None and expected is not None and expected[2] == self.path:
            shipped = _shipped_code(plan.requested)
            if shipped is not None:
                # Instead of compiling: a valid cache here is taken, as a plain
                # import would, and otherwise written with the code that ran.
                cache = _BytecodeCache(self, source, read)
                if cache.code is not None:
                    return cache.code
                code, marshalled = shipped
                cache.write(marshalled)
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
    """Puts herald's finder first on ``sys.meta_path`` (again, if a finder was
    inserted before it since: the one before would import unchecked)."""
    if sys.meta_path[:1] != [_Finder]:
        with _install_lock:
            if sys.meta_path[:1] != [_Finder]:
                if _Finder in sys.meta_path:
                    sys.meta_path.remove(_Finder)
                sys.meta_path.insert(0, _Finder)


def _search(name, path, target):
    """What the finders after herald's find for ``name`` (see ``_found``)."""

    def search():
        for finder in list(sys.meta_path):
            find_spec = None if finder is _Finder else getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    return _found(search)


def _find_spec(name):
    """The spec this node would import ``name`` from, or None if it finds none
    (the import then fails and says why; see ``_found``)."""

    def find():
        try:
            return importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None

    return _found(find)


def _found(find):
    """``find()``, or if that finds nothing, ``find()`` again after invalidating
    the finders' caches: a file newer than a path finder's cached listing
    (written within the same timestamp tick) is not in it."""
    spec = find()
    if spec is None:
        importlib.invalidate_caches()
        spec = find()
    return spec


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
    ``read``), its marshalled form, and whether it came from the bytecode
    cache: that is taken when valid for exactly that file, as a plain import
    would take it; otherwise the bytes are compiled, and cached as a plain
    import would."""
    cache = _BytecodeCache(loader, source, read)
    if cache.code is not None:
        return cache.code, cache.marshalled, True
    code = loader.source_to_code(source, loader.path)
    marshalled = marshal.dumps(code)
    cache.write(marshalled)
    return code, marshalled, False


class _BytecodeCache:
    """The bytecode cache (``__pycache__``, PEP 552) of one module source as it
    was read (its bytes ``source``, its file's status ``read``): ``code`` and
    ``marshalled`` if it holds this Python's compile of exactly that file (a
    timestamp cache of the same modification time and size, or a hash-based
    one of these very bytes, checked whatever its flags say), else None."""

    def __init__(self, loader, source, read):
        self._loader = loader
        self._source = source
        self._read = read
        self.code = self.marshalled = None
        # The format of the cache there: a hash-based one is rewritten as one.
        self._flags = 0
        try:
            self._path = importlib.util.cache_from_source(loader.path)
        except NotImplementedError:  # no cache tag: this Python keeps no bytecode cache
            self._path = None
            return
        self._load()

    def write(self, marshalled):
        """Caches ``marshalled`` as a plain import does after compiling: unless
        this Python writes no bytecode, in the format of the cache there, with
        the source file's permissions."""
        if sys.dont_write_bytecode or self._path is None:
            return
        if self._flags & 1:
            stamp = importlib.util.source_hash(self._source)
        else:
            stamp = _stamp(self._read)
        header = importlib.util.MAGIC_NUMBER + self._flags.to_bytes(4, "little") + stamp
        # set_data writes atomically and gives up quietly (a read-only directory);
        # _mode is what Python's own loader passes: the source's, writable by its owner.
        self._loader.set_data(self._path, header + marshalled, _mode=self._read.st_mode | 0o200)

    def _load(self):
        try:
            with open(self._path, "rb") as file:
                data = file.read()
        except OSError:
            return
        if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
            return
        flags = int.from_bytes(data[4:8], "little")
        if flags & ~0b11:
            return  # invalid: Python compiles the source instead
        self._flags = flags
        if flags & 1:
            if data[8:16] != importlib.util.source_hash(self._source):
                return
        elif data[8:16] != _stamp(self._read):
            return
        try:
            code = marshal.loads(data[16:])
        except Exception:  # noqa: BLE001 - any broken cache: compile instead
            return
        if isinstance(code, types.CodeType):
            self.code, self.marshalled = code, data[16:]


def _stamp(read):
    """A timestamp cache's record of its source file: mtime and size, each as a
    32-bit little-endian number."""
    return (int(read.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (
        read.st_size & 0xFFFFFFFF
    ).to_bytes(4, "little")


def _shown(path):
    """A path as text that any error message can carry (bytes that are not
    UTF-8 escaped: such a message still reaches the requesting node)."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _optimization():
    """This Python's optimisation level as compiling sees it (above 2 is 2)."""
    return min(sys.flags.optimize, 2)


def _code_blob(marshalled):
    """The compiled module as sent after a file record: NUL, this Python's
    bytecode magic number, its optimisation level, the marshalled code; empty
    if too large to send."""
    if len(marshalled) > _SHIPPED_CODE_LIMIT:
        return b""
    return b"\0" + importlib.util.MAGIC_NUMBER + bytes([_optimization()]) + marshalled


def _shipped_code(record):
    """(code, marshalled): the requester's compiled code in a file record, if it
    sent some that this interpreter can run as its own compile of the same
    bytes; else None."""
    if not record:
        return None
    blob = record[len(plain(record)) :]
    magic = importlib.util.MAGIC_NUMBER
    header = 1 + len(magic) + 1
    if len(blob) <= header or blob[1 : 1 + len(magic)] != magic or blob[1 + len(magic)] != _optimization():
        return None
    try:
        code = marshal.loads(blob[header:])
    except Exception:  # noqa: BLE001 - the node compiles its own instead
        return None
    return (code, blob[header:]) if isinstance(code, types.CodeType) else None
