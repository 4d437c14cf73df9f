"""Python callables on other nodes: ``register_global``, ``launch``, ``@task``.

A callable travels as a pickle. A function that can be imported (a module-level
function of an importable module, or a :class:`Task`) is pickled *by name*
(module + qualified name); the node that runs it imports that module on demand.
Functions defined in ``__main__`` (the script), lambdas and closures are pickled
*by value* with cloudpickle: their code, defaults and the globals they use
travel with them. Limits of by-value functions: the globals they use are
copies (changes on one node are not seen on another), a global that cannot be
pickled (a lock, an open file, a socket) cannot be sent, and classes defined in
``__main__`` travel by value too, so their instances are not ``isinstance`` of
each other across calls. Arguments and results are pickled the same way.
"""

import functools
import importlib
import io
import operator
import pickle
import types

from . import _herald

from . import _context
from ._errors import HeraldError, RegistrationError, RemoteError, RemoteTraceback, TaskError, add_note

_RESULT_OK = 0
_RESULT_RAISED = 1
# A task's exception travels in one frame with its text and traceback: see
# encode_exception.
_EXCEPTION_PICKLE_LIMIT = 16 << 20
_EXCEPTION_TEXT_LIMIT = 64 << 10
_CALL_PAYLOAD = b"call"


def register_global(fn, /, *args, **kwargs):
    """Runs ``fn(*args, **kwargs)`` once on every node of the job (this one
    included, on a herald worker thread) and returns when all have.

    The registration's key is the pickled call, so the same call made again, or
    by another node (for a function sent by name, whose pickle is the same
    everywhere), runs nowhere a second time. A call that involves a class
    defined in ``__main__`` pickles differently in every process (cloudpickle
    names such classes afresh), so the same call from N ranks of an SPMD script
    runs N times on every node. Raises
    :class:`herald.RegistrationError` naming each node where it raised, with the
    remote traceback. Called while a module is being imported, it returns at once
    and the wait comes at the next safe point; called from code that herald runs
    for another global registration, it runs here only (nested).
    """
    _check_callable("register_global", fn)
    what = f"register_global({describe(fn)})"
    data = dumps((fn, args, kwargs))
    if _context.in_invocation():
        # Nested: the enclosing registration waits for it; waiting here could not
        # finish before this thread returns.
        _herald.register(_CALL_PAYLOAD, data)
        return
    if _context.inside_import():
        handle = _herald.register(_CALL_PAYLOAD, data)
        _context.defer(what, handle, lambda outcome: _check(what, outcome))
        return
    _context.settle()
    _check(what, _herald.register(_CALL_PAYLOAD, data).wait())


def launch(node, fn, /, *args, **kwargs):
    """Runs ``fn(*args, **kwargs)`` on ``node`` and returns a :class:`Future`.

    ``fn`` is a Python callable (see the module docs for how it travels), or the
    name of a registered task (a native task, say) with at most one bytes-like
    argument; the future then gives the task's result bytes. The task runs on
    ``node`` only after every registration requested on this node before the
    launch is done there.
    """
    node = _check_node(node)
    if _context.at_safe_point():
        _context.settle()
    if isinstance(fn, str):
        if kwargs or len(args) > 1:
            raise TypeError("a task launched by name takes at most one bytes-like argument")
        data = _task_bytes(fn, args[0]) if args else b""
        handle = _herald.launch(node, fn, data)
        return Future(handle, node, f"task {fn!r}", None, _after_this_import(node))
    _check_callable("launch", fn)
    data = dumps((fn, args, kwargs))
    handle = _herald.launch(node, _herald.PYTHON_CALL_TASK, data)
    return Future(handle, node, describe(fn), _decode, _after_this_import(node))


def _after_this_import(node):
    """Whether a task launched to ``node`` now runs only after the module this
    thread is importing for its own ``import_global``: the task waits for every
    registration made here before it, that global import included, whose part on
    this node is this thread's import."""
    return node == _herald.node_id() and _context.in_caller_import()


def _check_callable(call, fn):
    """Refuses here what every node would fail to call (a round of the whole job
    for a local mistake)."""
    if not callable(fn):
        extra = " or the name of a registered task (a str)" if call == "launch" else ""
        raise TypeError(f"{call}() takes a callable{extra}, not {type(fn).__name__}")


def _task_bytes(name, argument):
    """The argument bytes of a task launched by name. ``bytes(x)`` alone would turn
    an int into that many zero bytes, and say nothing useful about a str."""
    try:
        view = memoryview(argument)
    except TypeError:
        hint = " (encode it first, e.g. text.encode())" if isinstance(argument, str) else ""
        raise TypeError(
            f"task {name!r} launched by name takes bytes or another bytes-like object as its "
            f"argument, not {type(argument).__name__}{hint}"
        ) from None
    return view.tobytes()


class Future:
    """The pending result of a launched task."""

    def __init__(self, handle, node, what, decode, after_this_import=False):
        self._handle = handle
        self.node = node
        self._what = what
        self._decode = decode
        # Launched to this node by the body of a module that import_global is
        # importing on this thread: the task runs after that import ends.
        self._after_this_import = after_this_import

    def result(self, timeout=None):
        """Waits (without holding the GIL) and returns the task's result.

        A Python task that raised re-raises its exception here, with the remote
        traceback as its ``__cause__``. :class:`herald.TaskError` if the task
        could not run (not registered on that node, node lost), ``TimeoutError``
        after ``timeout`` seconds (None or infinity: no limit). A signal handler
        that raises (Ctrl-C's ``KeyboardInterrupt``) ends the wait with its
        exception; the task goes on. Unlike herald's own calls, this waits even
        while a module is being imported: a task that needs that module on this
        node would then wait for the import, and the import for the task. In
        the body of a module that ``import_global`` is importing on this thread,
        waiting for a task launched there to this node raises
        :class:`herald.HeraldError` at once (the task runs after that import).
        """
        if self._after_this_import and _context.in_caller_import() and not self.done():
            raise HeraldError(
                f"waiting for {self._what} on node {self.node} (this node) from the body of the "
                "module that import_global is importing here would never end: the task runs "
                "after that import, which waits for this wait; wait for it after import_global "
                "returns, or launch it to another node"
            )
        try:
            data = self._handle.wait(timeout)
        except _herald.TaskFailed as failure:
            message, node, kind = failure.args
            # The runtime's own text may name the task already ("task 'x' is not
            # registered on node 1: ..."): said once.
            if not message.startswith(self._what):
                message = f"{self._what} on node {node}: {message}"
            raise TaskError(message, node, kind) from None
        return data if self._decode is None else self._decode(data, self.node, self._what)

    def done(self):
        """Whether the result is in."""
        return self._handle.done()

    def __repr__(self):
        state = "done" if self.done() else "pending"
        return f"<herald.Future {self._what} on node {self.node}: {state}>"


class Task:
    """A function made into a herald task by :func:`task`.

    Calling it runs it here; ``launch(node, ...)`` runs it on ``node``;
    ``launch_all(...)`` on every node. It is sent to other nodes by name when its
    module can be imported there, by value when it is defined in ``__main__``.
    """

    def __init__(self, fn):
        _check_callable("task", fn)
        functools.update_wrapper(self, fn)
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def launch(self, node, /, *args, **kwargs):
        """Runs the task on ``node``; returns a :class:`Future`."""
        return launch(node, self, *args, **kwargs)

    def launch_all(self, /, *args, **kwargs):
        """Runs the task on every node; returns their futures, by node."""
        return [launch(node, self, *args, **kwargs) for node in range(_herald.num_nodes())]

    def __reduce__(self):
        module, qualname = self.fn.__module__, self.fn.__qualname__
        if module != "__main__" and _lookup(module, qualname) is self:
            return (_resolve, (module, qualname))
        return (Task, (self.fn,))

    def __repr__(self):
        return f"<herald.Task {self.fn.__module__}.{self.fn.__qualname__}>"


def task(fn):
    """Decorator: makes ``fn`` a :class:`Task`, launchable with ``fn.launch(node, ...)``."""
    return Task(fn)


def describe(fn):
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}.{qualname}" if module else qualname


def dumps(value):
    """Pickles ``value``, by value where needed (cloudpickle)."""
    pickler = _pickler()
    try:
        if pickler is not None:
            buffer = io.BytesIO()
            pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(value)
            return buffer.getvalue()
        return _dumps_by_name(value)
    except Exception as error:
        raise TypeError(f"cannot send {_short(value)} to other nodes: {error}") from error


@functools.lru_cache(maxsize=None)
def _pickler():
    """cloudpickle's pickler, made on first use (importing it takes a while),
    keeping the file names of the code it sends by value, so that remote
    tracebacks of a script's functions name the script (cloudpickle 3 writes
    ``<dynamic-code>`` instead); None without cloudpickle."""
    try:
        import cloudpickle
    except ImportError:
        return None
    table = getattr(cloudpickle.Pickler, "dispatch_table", None)
    code_reduce = table.get(types.CodeType) if table is not None else None
    if code_reduce is None:
        return cloudpickle.Pickler

    def reduce_code(code):
        constructor, args = code_reduce(code)
        args = tuple(
            code.co_filename if isinstance(arg, str) and arg == "<dynamic-code>" else arg
            for arg in args
        )
        return constructor, args

    class Pickler(cloudpickle.Pickler):
        dispatch_table = {**table, types.CodeType: reduce_code}

    return Pickler


def run_call(data):
    """Runs a pickled call (on the node it was sent to) and returns its value."""
    fn, args, kwargs = pickle.loads(data)
    return fn(*args, **kwargs)


def encode_result(value):
    return bytes([_RESULT_OK]) + dumps(value)


def encode_exception(error, traceback_text):
    """The exception, pickled whole if it unpickles (its constructor takes its
    ``args``), else as its type, ``args`` and attributes to be rebuilt without
    calling its constructor; its type name, text and traceback either way.
    All of it travels in one frame (64 MiB by default), and the text and the
    traceback both repeat the message: an exception that pickles to more than
    ``_EXCEPTION_PICKLE_LIMIT`` travels as a ``RemoteError``, and the text and
    traceback are cut at ``_EXCEPTION_TEXT_LIMIT`` characters each, so that a
    huge message still reaches the caller as the exception it is."""
    pickled = parts = None
    try:
        pickled = dumps(error)
        pickle.loads(pickled)
    except Exception:  # noqa: BLE001 - sent in parts instead
        pickled = None
        try:
            parts = dumps((type(error), error.args, dict(getattr(error, "__dict__", {}))))
        except Exception:  # noqa: BLE001 - sent as a RemoteError instead
            parts = None
    traceback_text = _cut(traceback_text)
    too_large = max(len(pickled or b""), len(parts or b""))
    if too_large > _EXCEPTION_PICKLE_LIMIT:
        pickled = parts = None
        traceback_text += (
            f"\n(herald: the exception pickles to {too_large} bytes, over the "
            f"{_EXCEPTION_PICKLE_LIMIT} a task's exception may take: it is sent as its "
            "type name, text and traceback; return or raise large data by reference)"
        )
    kind = type(error)
    type_name = f"{kind.__module__}.{kind.__qualname__}"
    body = pickle.dumps((pickled, parts, type_name, _cut(_text_of(error)), traceback_text))
    return bytes([_RESULT_RAISED]) + body


def _cut(text):
    """``text``, cut at ``_EXCEPTION_TEXT_LIMIT`` characters, saying so."""
    if len(text) <= _EXCEPTION_TEXT_LIMIT:
        return text
    return text[:_EXCEPTION_TEXT_LIMIT] + f"... [herald cut it: {len(text)} characters in all]"


def _decode(data, node, what):
    if data[:1] == bytes([_RESULT_OK]):
        try:
            return pickle.loads(data[1:])
        except Exception as error:
            # Raised here, by this node's unpickling, not by the task.
            add_note(
                error,
                f"(unpickling the result of {what} from node {node} here: the task "
                "returned it; what it refers to must be importable on this node too)",
            )
            raise
    pickled, parts, type_name, message, traceback_text = pickle.loads(data[1:])
    error = _unpickle_exception(pickled, parts)
    if error is None:
        raise RemoteError(type_name, message, node, traceback_text) from RemoteTraceback(
            traceback_text
        )
    add_note(error, f"(raised by a herald task on node {node}; its traceback is above)")
    raise error from RemoteTraceback(traceback_text)


def _unpickle_exception(pickled, parts):
    """The exception as its own type, or None if it cannot be rebuilt here."""
    try:
        if pickled is not None:
            error = pickle.loads(pickled)
            return error if isinstance(error, BaseException) else None
        if parts is None:
            return None
        kind, args, attributes = pickle.loads(parts)
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            return None
        # What unpickling does, minus the call to a constructor that does not
        # take its own args: BaseException.__new__ stores them.
        error = kind.__new__(kind, *args)
        error.args = args
        error.__dict__.update(attributes)
        return error
    except Exception:  # noqa: BLE001 - reported as a RemoteError instead
        return None


def _check_node(node):
    """``node`` as a node id of this job; TypeError or ValueError otherwise."""
    try:
        if isinstance(node, bool):
            raise TypeError
        node = operator.index(node)
    except TypeError:
        raise TypeError(f"a node is an int, not {type(node).__name__}") from None
    nodes = _herald.num_nodes()
    if not 0 <= node < nodes:
        what = "node 0 only" if nodes == 1 else f"nodes 0..{nodes - 1} (inclusive)"
        raise ValueError(f"node {node!r} does not exist: the job has {what}")
    return node


def _check(what, outcome):
    if outcome is not None:
        failures, unreachable = outcome
        raise RegistrationError(what, dict(failures), unreachable, _herald.num_nodes())


def _dumps_by_name(value):
    pickler_error = None
    try:
        data = pickle.dumps(value)
    except Exception as error:  # noqa: BLE001 - re-raised with advice below
        pickler_error = error
    if pickler_error is None and b"__main__" not in data:
        return data
    raise TypeError(
        "functions and classes defined in __main__, lambdas and closures are sent by "
        "value, which needs cloudpickle (pip install cloudpickle)"
        + (f"; pickle said: {pickler_error}" if pickler_error else "")
    )


def _lookup(module, qualname):
    try:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
    except (ImportError, AttributeError):
        return None


def _resolve(module, qualname):
    target = _lookup(module, qualname)
    if target is None:
        raise ImportError(f"cannot find {module}.{qualname} on this node", name=module)
    return target


def _text_of(error):
    """``str(error)``, or what the traceback module prints when that raises."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - the exception itself still travels
        return "<exception str() failed>"


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
