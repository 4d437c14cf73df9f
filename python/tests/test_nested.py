"""import_global called while a module is being imported: nested on the nodes
that import it for another import_global, deferred on a thread that holds
import locks. Neither may deadlock or import twice. (A deadlock stops the run
through the deadlock_watchdog fixture.)"""

import importlib

import pytest

import herald
import hp_probe
from hp_suite import on_every_node


def test_nested_import_on_every_node(nodes, new_module_name, write_module):
    inner = write_module(new_module_name("inner"), "VALUE = 41\n")
    outer = write_module(
        new_module_name("outer"),
        f"import herald\ninner = herald.import_global({inner!r})\nVALUE = inner.VALUE + 1\n",
    )
    module = herald.import_global(outer)
    assert module.VALUE == 42
    for name in (outer, inner):
        assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)
        assert on_every_node(hp_probe.has_module, name) == [True] * len(nodes)


def test_nested_circular_import(nodes, new_module_name, write_module):
    first, second = new_module_name("ring"), new_module_name("ring")
    write_module(first, f"import herald\nherald.import_global({second!r})\nREADY = True\n")
    # Imports `first` while `first` is still being imported: the partial module,
    # as plain Python gives.
    write_module(second, f"import {first}\n")
    herald.import_global(first)
    for name in (first, second):
        assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)


def test_import_global_of_itself_while_imported_on_this_thread(nodes, new_module_name, write_module):
    """The main thread holds the module's import lock; this node's invocation of
    the global import needs that lock. Blocking here would deadlock."""
    dependency = write_module(new_module_name("dep"))
    name = write_module(
        new_module_name("selfish"),
        "import herald\n"
        "herald.import_global(__name__)\n"
        f"herald.import_global({dependency!r})\n"
        "COMPLETE = True\n",
    )
    module = importlib.import_module(name)  # a plain import, as any program does
    assert module.COMPLETE
    assert herald.wait_pending() == 2
    for imported in (name, dependency):
        assert on_every_node(hp_probe.import_count, imported) == [1] * len(nodes)
        assert on_every_node(hp_probe.has_module, imported) == [True] * len(nodes)


@pytest.mark.leaves_a_node_failed
def test_deferred_failure_surfaces_at_the_next_safe_point(nodes, new_module_name, write_module):
    last = nodes[-1]
    failing = write_module(
        new_module_name("fragile"),
        f"import herald\nif herald.node_id() == {last}:\n    raise OSError('no disk on node {last}')\n",
    )
    importer = write_module(new_module_name("importer"), f"import herald\nherald.import_global({failing!r})\n")
    if last == 0:
        # One node: the failure is this node's own; the import raises it, as a
        # plain import of the failing module would.
        with pytest.raises(OSError, match="no disk on node 0"):
            importlib.import_module(importer)
        return
    importlib.import_module(importer)
    with pytest.raises(herald.GlobalImportError) as raised:
        herald.wait_pending()
    assert list(raised.value.failures) == [last]
    assert herald.wait_pending() == 0


def test_module_imported_on_demand_by_a_task(nodes, new_module_name, write_module):
    """Unpickling a task's function imports its module on the remote node, on a
    task thread, inside an import: its import_global is deferred to the task's end."""
    dependency = write_module(new_module_name("needed"))
    name = write_module(
        new_module_name("tasks"),
        f"import herald\nherald.import_global({dependency!r})\n\n"
        "def where():\n    return herald.node_id()\n",
    )
    module = importlib.import_module(name)
    assert [herald.launch(node, module.where).result() for node in nodes] == nodes
    assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)
    assert on_every_node(hp_probe.import_count, dependency) == [1] * len(nodes)
