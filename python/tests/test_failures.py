"""What goes wrong comes back named: which node, which exception, its traceback."""

import os
import signal
import sys
import uuid

import pytest

import herald
import hp_probe
from hp_suite import on_every_node, per_node_module, write_per_node


def test_missing_module_names_every_node(nodes, new_module_name):
    name = new_module_name("hp_missing")
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    error = raised.value
    assert isinstance(error, herald.GlobalImportError)
    assert error.name == name
    assert sorted(error.failures) == nodes
    message = str(error)
    assert f"import_global({name!r}) failed on {len(nodes)} of {len(nodes)} node(s)" in message
    for node in nodes:
        assert f"node {node}: ModuleNotFoundError: No module named {name!r}" in message


@pytest.mark.leaves_a_node_failed
def test_module_failing_on_one_node_only(nodes, new_module_name, write_module):
    last = nodes[-1]
    name = write_module(
        new_module_name(),
        "import herald\n"
        f"if herald.node_id() == {last}:\n"
        f"    raise RuntimeError('this module refuses node {last}')\n",
    )
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    error = raised.value
    assert list(error.failures) == [last]
    message = str(error)
    assert f"failed on 1 of {len(nodes)} node(s)" in message
    assert f"node {last}: RuntimeError: this module refuses node {last}" in message
    # The remote traceback, down to the module's own line, from the import on:
    # herald's frames and the import machinery's are left out.
    assert f"{name}.py" in message and "raise RuntimeError" in message
    assert "_imports.py" not in message and "_remote.py" not in message, message
    assert "importlib" not in message, message
    # Every other node has the module; the failing one refuses tasks from a
    # launcher that has it, naming what failed there, instead of running them.
    others = [herald.launch(node, hp_probe.has_module, name) for node in nodes[:-1]]
    assert [future.result() for future in others] == [True] * (len(nodes) - 1)
    if last != 0:
        with pytest.raises(herald.TaskError, match="a registration it requires failed there"):
            herald.launch(last, hp_probe.has_module, name).result()
    # The outcome of a global import is the job's: asking again gives the same answer.
    with pytest.raises(ImportError, match=f"this module refuses node {last}"):
        herald.import_global(name)


def _counted(version):
    return f"import hp_probe\nhp_probe.count_import(__name__)\nVERSION = {version}\n"


def test_the_same_module_in_other_places_imports_everywhere(nodes, new_module_name, tmp_path):
    base, name = per_node_module(new_module_name, tmp_path)
    write_per_node(base, name, lambda node: _counted(1) + _WHERE)
    module = herald.import_global(name)
    assert module.VERSION == 1
    assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)
    # Each node's code names its own file (the requester's compiled code is
    # for its path only: elsewhere a node compiles its own).
    here = [os.path.join(base, f"node{node}", f"{name}.py") for node in nodes]
    assert on_every_node(hp_probe.code_file_of, name, "where") == here


_WHERE = "def where():\n    return where.__code__.co_filename\n"


@pytest.mark.leaves_a_node_failed
def test_a_module_whose_file_differs_on_a_node_fails_there(nodes, new_module_name, tmp_path):
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    base, name = per_node_module(new_module_name, tmp_path)
    # The last node's version leaves a mark if it runs.
    ran = os.path.join(base, "other-version-ran")
    other = f"VERSION = 2\nopen({ran!r}, 'w').close()\n"
    write_per_node(base, name, lambda node: other if node == last else _counted(1))
    here = os.path.join(base, f"node{last}", f"{name}.py")
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    error = raised.value
    assert list(error.failures) == [last]
    message = str(error)
    there = os.path.join(base, "node0", f"{name}.py")
    assert f"node {last} would import (so it did not) {name} from {here}" in message, message
    assert f"not the file node 0 found ({there}" in message, message
    # Refused before it ran: the other version never ran there.
    assert not os.path.exists(ran)


def test_a_module_file_replaced_while_a_node_imports_it_runs_the_checked_version(
    nodes, new_module_name, tmp_path
):
    # Every node's file is node 0's, but on the last node the module's body
    # renames another version over its own file (a deployment landing
    # mid-import). What ran there is still the version checked: a node reads
    # a module's source once, and runs the bytes it hashed.
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    base, name = per_node_module(new_module_name, tmp_path)
    staged = os.path.join(base, f"node{last}", "staged.py")
    source = (
        "import os\nimport herald\nVERSION = 1\n"
        f"if herald.node_id() == {last}:\n    os.replace({staged!r}, __file__)\n"
    )
    write_per_node(base, name, lambda node: source)
    with open(staged, "w") as file:
        file.write("VERSION = 2\n")
    herald.import_global(name)
    assert on_every_node(hp_probe.module_attribute, name, "VERSION") == [1] * len(nodes)
    # It was replaced there, during the import.
    assert not os.path.exists(staged)


@pytest.mark.leaves_a_node_failed
def test_a_bytecode_module_replaced_while_a_node_imports_it_fails_there(nodes, new_module_name, tmp_path):
    # A module without source (a .pyc alone) loads through Python's own
    # loader, so it is hashed before and after: one whose body renames another
    # version over its own file fails there, as which version ran is unknown.
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    base, name = per_node_module(new_module_name, tmp_path)
    staged = os.path.join(base, f"node{last}", "staged.pyc")
    source = (
        "import os\nimport herald\nVERSION = 1\n"
        f"if herald.node_id() == {last}:\n    os.replace({staged!r}, __file__)\n"
    )
    _write_bytecode(staged, source)
    with open(staged, "rb") as file:
        compiled = file.read()
    for node in nodes:
        with open(os.path.join(base, f"node{node}", f"{name}.pyc"), "wb") as file:
            file.write(compiled)
    _write_bytecode(staged, "VERSION = 2\n")
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    error = raised.value
    assert list(error.failures) == [last]
    here = os.path.join(base, f"node{last}", f"{name}.pyc")
    assert f"the file of {name}, {here}, was replaced while node {last} imported it" in str(
        error
    ), str(error)


def _write_bytecode(path, source):
    """Writes ``source`` compiled, as a module with no source beside it."""
    import py_compile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".src", "w") as file:
        file.write(source)
    py_compile.compile(path + ".src", cfile=path, doraise=True)
    os.remove(path + ".src")


def test_task_exception_comes_back_with_the_remote_traceback(nodes):
    last = nodes[-1]
    with pytest.raises(ValueError, match="no good") as raised:
        herald.launch(last, hp_probe.fail, "no good").result()
    error = raised.value
    assert isinstance(error.__cause__, herald.RemoteTraceback)
    remote = error.__cause__.text
    assert "hp_probe.py" in remote and "raise ValueError(message)" in remote
    # From the task's own code: herald's frames that ran it are left out.
    assert "_remote.py" not in remote and "_calls.py" not in remote, remote
    assert any(f"node {last}" in note for note in error.__notes__)


def test_exception_that_cannot_travel_becomes_remote_error(nodes):
    last = nodes[-1]
    with pytest.raises(herald.RemoteError) as raised:
        herald.launch(last, hp_probe.raise_unpicklable, "locked").result()
    error = raised.value
    assert error.type_name == "hp_probe.UnpicklableError"
    assert error.node == last
    assert "locked" in str(error) and "raise UnpicklableError" in error.remote_traceback
    with pytest.raises(TypeError, match="lock"):
        herald.launch(last, hp_probe.return_unpicklable).result()


@pytest.mark.leaves_a_node_failed
def test_a_module_file_replaced_while_this_node_imports_it_runs_what_this_node_checked(
    nodes, new_module_name, tmp_path
):
    # Node 0 reads and hashes its file, whose body then renames another version
    # over it: node 0 ran the version it hashed (and sent to the others), so
    # its part succeeds; the others, whose files are another version, refuse
    # theirs before running it.
    base, name = per_node_module(new_module_name, tmp_path)
    ran = os.path.join(base, "other-version-ran")
    here = os.path.join(base, "node0", f"{name}.py")
    staged = os.path.join(base, "node0", "staged.py")
    replacing = f"import os\nVERSION = 2\nos.replace({staged!r}, __file__)\n"
    other = f"VERSION = 1\nopen({ran!r}, 'w').close()\n"
    write_per_node(base, name, lambda node: replacing if node == 0 else other)
    with open(staged, "w") as file:
        file.write(other)
    if len(nodes) == 1:
        assert herald.import_global(name).VERSION == 2
        return
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    assert sorted(raised.value.failures) == nodes[1:]
    assert f"node {nodes[-1]} would import (so it did not) {name}" in str(raised.value)
    assert sys.modules[name].VERSION == 2
    assert not os.path.exists(ran)


def test_an_exception_too_large_for_a_frame_still_arrives(nodes):
    # Its message, text and traceback together exceed the 64 MiB frame: it
    # comes back as a RemoteError of its type, its text cut, never as a
    # complaint about the task's result.
    last = nodes[-1]
    with pytest.raises(herald.RemoteError) as raised:
        herald.launch(last, hp_probe.fail_huge, 24 << 20).result()
    error = raised.value
    assert error.type_name == "builtins.ValueError" and error.node == last
    assert "herald cut it: 25165824 characters in all" in str(error)
    assert len(str(error)) < 1 << 20
    assert "pickles to" in error.remote_traceback
    # One that fits still arrives whole, as its own type.
    with pytest.raises(ValueError) as raised:
        herald.launch(last, hp_probe.fail_huge, 1 << 20).result()
    assert str(raised.value) == "x" * (1 << 20)


def test_unknown_task_is_a_clear_error(nodes):
    for node in nodes:
        with pytest.raises(herald.TaskError) as raised:
            herald.launch(node, "hp.no_such_task", b"").result()
        error = raised.value
        assert error.node == node and error.kind == "failed"
        message = str(error)
        assert f"task 'hp.no_such_task' is not registered on node {node}" in message
        # Named once, and what is registered there is listed.
        assert message.count("hp.no_such_task") == 1, message
        assert "registered there: " in message and "'herald-python.call'" in message


def test_exception_whose_constructor_takes_two_arguments_keeps_its_type(nodes):
    last = nodes[-1]
    with pytest.raises(hp_probe.TwoArgs) as raised:
        herald.launch(last, hp_probe.raise_two_args, "eggs", 3).result()
    error = raised.value
    assert str(error) == "eggs x3" and error.what == "eggs"
    assert isinstance(error.__cause__, herald.RemoteTraceback)
    assert "raise TwoArgs(what, count)" in error.__cause__.text


def test_exception_whose_str_raises_keeps_its_type(nodes):
    last = nodes[-1]
    with pytest.raises(hp_probe.StrFails) as raised:
        herald.launch(last, hp_probe.raise_str_fails, 7).result()
    assert raised.value.args == (7,)
    assert "raise StrFails(code)" in raised.value.__cause__.text


def test_a_result_that_cannot_be_unpickled_here_says_so(nodes):
    last = nodes[-1]
    with pytest.raises(ValueError, match="this object cannot be unpickled") as raised:
        herald.launch(last, hp_probe.return_load_fails).result()
    notes = getattr(raised.value, "__notes__", [])
    assert any(
        f"unpickling the result of hp_probe.return_load_fails from node {last}" in note
        for note in notes
    ), notes


def test_a_signal_handler_that_raises_ends_a_wait_for_a_result(nodes):
    """As Ctrl-C (KeyboardInterrupt) ends any wait of Python's own."""
    last = nodes[-1]
    gate = f"gate-{uuid.uuid4().hex}"
    blocked = herald.launch(last, hp_probe.wait_for_gate, gate, 20)

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Alarm):
            blocked.result()
        # Raised while the task still waits: the handler ended the wait.
        assert not blocked.done()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    herald.launch(last, hp_probe.open_gate, gate).result()
    assert blocked.result() is True


@pytest.mark.leaves_a_node_failed
def test_register_global_failure_names_the_node(nodes, new_module_name):
    last = nodes[-1]
    message = new_module_name("refusal")
    with pytest.raises(herald.RegistrationError) as raised:
        herald.register_global(hp_probe.fail_on, last, message)
    error = raised.value
    assert list(error.failures) == [last]
    assert f"node {last}: RuntimeError: {message}" in str(error)
    assert "hp_probe.py" in error.failures[last]


def test_arguments_that_cannot_be_sent_fail_here(nodes):
    import threading

    with pytest.raises(TypeError, match="cannot send"):
        herald.launch(nodes[-1], hp_probe.record, threading.Lock())
    n = len(nodes)
    job = f"the job has nodes 0..{n - 1} (inclusive)" if n > 1 else "the job has node 0 only"
    for bad in (n, -1, 2**70):
        with pytest.raises(ValueError) as raised:
            herald.launch(bad, hp_probe.node)
        assert str(raised.value) == f"node {bad} does not exist: {job}"
    with pytest.raises(TypeError, match="a node is an int"):
        herald.launch(True, hp_probe.node)
