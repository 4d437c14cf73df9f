"""What a node runs when the job asks it to (called by herald-python's executor
on a herald worker thread): the invocation of a global registration, and the
task every Python launch runs. Failures come back as text with the traceback
(registrations) or as a pickled exception (tasks), never as a crash.
"""

from . import _calls, _context, _imports
from ._errors import add_note, format_error


def invoke(payload, args):
    """Runs a Python global registration here. Returns None, or the error text."""
    with _context.invocation():
        try:
            module_name = _imports.module_name_of(payload)
            if module_name is not None:
                _imports.import_for_node(module_name, args)
                return None
            if payload == b"call":
                _calls.run_call(args)
                return None
            return (
                f"unknown Python registration {payload[:40]!r}: "
                "every node must run the same herald-python"
            )
        except BaseException as error:  # noqa: BLE001 - the node reports it, with traceback
            return format_error(error)


def run_task(payload, args):
    """Runs a launched Python call here and returns its encoded outcome."""
    try:
        if payload != b"call":
            raise ValueError(f"unknown Python task {payload[:40]!r}")
        value = _calls.run_call(args)
        # Imports this task made may have started global imports: they finish
        # with the task, so that its caller sees their failures.
        _context.settle()
        return _calls.encode_result(value)
    except BaseException as error:  # noqa: BLE001 - sent back to the caller, with traceback
        try:
            _context.settle()
        except Exception as deferred:  # noqa: BLE001 - kept with the task's own error
            add_note(error, f"a global registration this task started also failed: {deferred}")
        return _calls.encode_exception(error, format_error(error))
