"""nativetasks: a Python package whose tasks are native code.

Importing it loads ``libnativetasks.so`` with ``ctypes`` - on this node only, as
any Python import does. The library's constructor registers its tasks with
herald *globally*, so every node of the job can run them; the program needs no
special call: a plain ``import nativetasks``, then launches, on any node.

The library is found at ``$NATIVETASKS_LIBRARY``, or next to this file. It must
sit in a directory every node allows (site-packages when the package is
installed; else ``HERALD_LIBRARY_PATH`` or ``--library-path``): the other nodes
load the very same file.
"""

import ctypes
import os
import struct

import herald

LIBRARY_ENV = "NATIVETASKS_LIBRARY"


def _library_path():
    path = os.environ.get(LIBRARY_ENV)
    if path:
        return path
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnativetasks.so")


library = ctypes.CDLL(_library_path())


def square(node, value):
    """Squares ``value`` with the native task, on ``node``; returns a future of the int."""
    return _Decoded(herald.launch(node, "nativetasks.square", struct.pack("<q", value)), "<q")


def where(node):
    """Asks the native task on ``node`` which node it ran on; a future of that id."""
    return _Decoded(herald.launch(node, "nativetasks.where"), "<I")


class _Decoded:
    """A future of a native task's result bytes, unpacked."""

    def __init__(self, future, layout):
        self._future = future
        self._layout = layout
        self.node = future.node

    def result(self, timeout=None):
        (value,) = struct.unpack(self._layout, self._future.result(timeout))
        return value
