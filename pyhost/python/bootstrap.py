"""Makes the ``herald`` package that is compiled into herald-python importable.

herald-python runs this once, before anything else, with the package's sources.
A finder at the front of ``sys.meta_path`` serves exactly those module names;
``get_source`` lets tracebacks show their lines.
"""

import importlib.abc
import importlib.util
import sys


class EmbeddedPackage(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finder and loader for modules whose source is held in memory."""

    def __init__(self, sources):
        # name -> (is_package, file name, source)
        self._sources = dict(sources)

    def find_spec(self, fullname, path=None, target=None):
        entry = self._sources.get(fullname)
        if entry is None:
            return None
        is_package, filename, _ = entry
        spec = importlib.util.spec_from_loader(
            fullname, self, origin=filename, is_package=is_package
        )
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        code = self.get_code(module.__name__)
        exec(code, module.__dict__)

    def get_code(self, fullname):
        _, filename, source = self._sources[fullname]
        return compile(source, filename, "exec", dont_inherit=True)

    def get_source(self, fullname):
        entry = self._sources.get(fullname)
        if entry is None:
            raise ImportError(f"no embedded source for {fullname}", name=fullname)
        return entry[2]

    def is_package(self, fullname):
        return self._sources[fullname][0]


def install(sources):
    """Puts the finder first on ``sys.meta_path`` and imports ``herald``.

    The native half is built in as ``_herald``; the package imports it as
    ``herald._herald``, the name it has in the wheel."""
    import _herald

    sys.modules["herald._herald"] = _herald
    sys.meta_path.insert(0, EmbeddedPackage(sources))
    importlib.import_module("herald")
