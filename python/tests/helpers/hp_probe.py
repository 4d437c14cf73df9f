"""Functions the tests run on every node (importable everywhere: the test
session adds this directory to ``sys.path`` on every node)."""

import collections
import sys
import threading

import herald

# How many times each test module's body ran in this interpreter.
imports = collections.Counter()
# What register_global calls recorded here.
calls = []
# How many times this interpreter compiled each file's source (audit event
# "compile", which every compile of Python source raises), once
# record_compiles() ran here.
compiles = collections.Counter()
_compiles_recorded = False


def count_import(name):
    """Called first thing by every generated test module."""
    imports[name] += 1


def import_count(name):
    return imports[name]


def has_module(name):
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


def node():
    return herald.node_id()


def record(*items):
    calls.append(items)


def times_recorded(*items):
    return calls.count(items)


def stats():
    return herald.stats()


def record_compiles():
    global _compiles_recorded
    if not _compiles_recorded:
        sys.addaudithook(_count_compile)
        _compiles_recorded = True


def _count_compile(event, args):
    if event == "compile" and len(args) == 2 and isinstance(args[1], str):
        compiles[args[1]] += 1


def compile_count(path):
    return compiles[path]


def write_bytecode(value):
    """Sets ``sys.dont_write_bytecode`` to ``not value``; returns the old value."""
    old = not sys.dont_write_bytecode
    sys.dont_write_bytecode = not value
    return old


def set_pycache_prefix(base):
    """Gives this node a bytecode cache directory of its own under ``base`` (as
    if each node had its own disk), or none if ``base`` is None; returns the
    old prefix."""
    import os

    old = sys.pycache_prefix
    sys.pycache_prefix = None if base is None else os.path.join(base, f"cache{herald.node_id()}")
    return old


def restore_pycache_prefix(prefix):
    sys.pycache_prefix = prefix


class DelegatingFinder:
    """A finder that puts itself first on ``sys.meta_path`` and finds modules
    through Python's path finder (as import hooks of code checkers do)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        import importlib.machinery

        return importlib.machinery.PathFinder.find_spec(name, path, target)


def put_finder_first(_token):
    """(``_token`` makes each call a registration of its own.)"""
    sys.meta_path.insert(0, DelegatingFinder)


def remove_finder(_token):
    sys.meta_path.remove(DelegatingFinder)


def add_node_archive(base):
    """Puts this node's own zip archive under ``base`` first on ``sys.path``."""
    import os

    add_path(os.path.join(base, f"node{herald.node_id()}.zip"))


def add_path(path):
    if path not in sys.path:
        sys.path.insert(0, path)


def module_attribute(name, attribute):
    return getattr(sys.modules[name], attribute)


def code_file_of(name, function):
    """The file the code of ``function`` in module ``name`` was compiled from."""
    return getattr(sys.modules[name], function).__code__.co_filename


def replicated_import(name):
    """What a replicated script does on every rank: import_global the same module."""
    return herald.import_global(name).__name__


def replicated_noop(name):
    """The same launch shape as replicated_import, without a registration."""
    return name


def replicated_register(token):
    herald.register_global(record, token)


def combine(values, scale=1):
    return {"node": herald.node_id(), "total": sum(values) * scale}


def fail(message):
    raise ValueError(message)


def fail_on(node_id, message):
    if herald.node_id() == node_id:
        raise RuntimeError(message)


class UnpicklableError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgs(Exception):
    """An exception whose constructor does not take its own ``args``."""

    def __init__(self, what, count):
        super().__init__(f"{what} x{count}")
        self.what = what


def raise_two_args(what, count):
    raise TwoArgs(what, count)


def raise_unpicklable(message):
    raise UnpicklableError(message)


def return_unpicklable():
    return threading.Lock()


@herald.task
def square(value):
    return value * value


class StrFails(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self):
        raise RuntimeError("no text for this exception")


def raise_str_fails(code):
    raise StrFails(code)


_gates = {}
_gates_lock = threading.Lock()


def _gate(name):
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def wait_for_gate(name, limit_s):
    """Waits until gate ``name`` is opened on this node; whether it was within
    ``limit_s`` seconds."""
    return _gate(name).wait(limit_s)


def open_gate(name):
    _gate(name).set()


def _refuse_to_load(why):
    raise ValueError(why)


class LoadFails:
    """Pickles anywhere; unpickling it raises."""

    def __reduce__(self):
        return (_refuse_to_load, ("this object cannot be unpickled",))


def return_load_fails():
    return LoadFails()


def add_node_path(base):
    """Puts this node's own directory under ``base`` first on ``sys.path`` (for
    modules whose file differs from node to node)."""
    import os

    path = os.path.join(base, f"node{herald.node_id()}")
    os.makedirs(path, exist_ok=True)
    add_path(path)
    return path


def fail_huge(size):
    raise ValueError("x" * size)
