"""The exceptions herald raises, and the text that names each failing node."""

from ._herald import HeraldError

import os
import traceback

__all__ = [
    "HeraldError",
    "RegistrationError",
    "GlobalImportError",
    "TaskError",
    "RemoteError",
    "RemoteTraceback",
    "add_note",
    "describe_failures",
    "format_error",
]


def add_note(error, note):
    """``error.add_note(note)``; on Pythons before 3.11 (no notes), the note is
    kept in ``__notes__`` where tracebacks do not show it."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:
        error.__notes__ = [*getattr(error, "__notes__", []), note]


class RegistrationError(HeraldError):
    """A global registration failed on some nodes, or could not reach them.

    ``failures`` maps each failing node to its error text (with the remote
    traceback); ``unreachable`` lists the nodes that went down before answering.
    """

    def __init__(self, what, failures, unreachable, num_nodes):
        self.what = what
        self.failures = dict(failures)
        self.unreachable = list(unreachable)
        self.num_nodes = num_nodes
        super().__init__(describe_failures(what, self.failures, self.unreachable, num_nodes))

    def __reduce__(self):
        return (type(self), (self.what, self.failures, self.unreachable, self.num_nodes))


class GlobalImportError(ImportError):
    """``import_global`` failed on some nodes; an ``ImportError`` whose message
    lists each failing node with its exception and traceback text.

    ``failures`` maps node to error text; ``unreachable`` lists lost nodes.
    """

    def __init__(self, module_name, failures, unreachable, num_nodes):
        self.failures = dict(failures)
        self.unreachable = list(unreachable)
        self.num_nodes = num_nodes
        what = f"import_global({module_name!r})"
        text = describe_failures(what, self.failures, self.unreachable, num_nodes)
        super().__init__(text, name=module_name)

    def __reduce__(self):
        return (type(self), (self.name, self.failures, self.unreachable, self.num_nodes))


class TaskError(HeraldError):
    """A launched task produced no result: its name is not registered on the
    node (``kind == "failed"``, the message says so), a registration it requires
    failed there (``"requirement"``), or the node went down (``"unreachable"``).
    A Python task that *raised* re-raises its own exception instead.
    """

    def __init__(self, message, node, kind):
        self.node = node
        self.kind = kind
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.node, self.kind))


class RemoteTraceback(Exception):
    """The traceback of an exception raised on another node, attached as the
    ``__cause__`` of the exception re-raised here."""

    def __init__(self, text):
        self.text = text
        super().__init__(text)

    def __str__(self):
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RemoteError(HeraldError):
    """A remote task raised an exception that cannot be re-raised here as
    itself (it could not be pickled there or unpickled here). ``type_name``,
    ``node`` and ``remote_traceback`` describe it."""

    def __init__(self, type_name, message, node, remote_traceback):
        self.type_name = type_name
        self.message = message
        self.node = node
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message} (raised on node {node})")

    def __reduce__(self):
        return (type(self), (self.type_name, self.message, self.node, self.remote_traceback))


def describe_failures(what, failures, unreachable, num_nodes):
    """One line per failing node (its exception), then its full error text."""
    bad = len(failures) + len(unreachable)
    lines = [f"{what} failed on {bad} of {num_nodes} node(s)"]
    for node in sorted(failures):
        text = str(failures[node]).rstrip()
        summary = _last_line(text)
        lines.append(f"  node {node}: {summary}")
        if text != summary:
            lines.extend("      " + line for line in text.splitlines())
    if unreachable:
        nodes = ", ".join(str(node) for node in sorted(unreachable))
        lines.append(f"  unreachable (crashed or disconnected): node(s) {nodes}")
    return "\n".join(lines)


def _last_line(text):
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return "(no error text)"


def format_error(error):
    """The error with its traceback, as Python prints it, without the leading
    frames of herald and of the import machinery that led to the user's code."""
    tb = error.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    # Bytes of a file name that are not UTF-8 (surrogates here) escaped: the
    # text must reach the requesting node, whatever paths it names.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_IMPORTLIB_DIR = os.path.dirname(traceback.__file__) + os.sep + "importlib" + os.sep
# This package's own files: the wheel's herald/*.py; herald-python's, compiled
# into it, have no __file__ and are named herald-python/herald/*.py.
_HERALD_DIR = (
    os.path.dirname(os.path.abspath(globals()["__file__"])) + os.sep
    if "__file__" in globals()
    else "herald-python/"
)


def _is_machinery(filename):
    return (
        filename.startswith("herald-python/")
        or filename.startswith(_HERALD_DIR)
        or filename.startswith("<frozen importlib")
        or filename.startswith(_IMPORTLIB_DIR)
    )
