"""The herald Python API on every node of the job."""

import ast
import json
import os

import pytest

import herald
import hp_probe
from hp_suite import on_every_node


def test_node_ids_and_job_size(nodes):
    assert herald.node_id() == 0
    assert herald.num_nodes() == len(nodes) >= 1
    assert on_every_node(hp_probe.node) == nodes


def test_import_global_imports_everywhere_exactly_once(nodes, new_module_name, write_module):
    name = write_module(new_module_name(), "VALUE = 7\n")
    module = herald.import_global(name)
    assert module.VALUE == 7
    assert on_every_node(hp_probe.has_module, name) == [True] * len(nodes)
    assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)
    # Asking again (by name or by module) imports nothing anywhere.
    assert herald.import_global(name) is module
    assert herald.import_global(module) is module
    assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)


def test_import_global_compiles_the_module_once_per_job(nodes, new_module_name, write_module, module_dir):
    # The requesting node compiles the source it hashed and sends the code:
    # every other node, whose file is the same at the same path, runs it
    # without compiling (the compile is most of an import's CPU).
    herald.register_global(hp_probe.record_compiles)
    name = write_module(new_module_name(), "def where():\n    return where.__code__.co_filename\n")
    path = os.path.join(module_dir, f"{name}.py")
    herald.import_global(name)
    assert on_every_node(hp_probe.compile_count, path) == [1] + [0] * (len(nodes) - 1)
    assert on_every_node(hp_probe.code_file_of, name, "where") == [path] * len(nodes)
    assert on_every_node(hp_probe.import_count, name) == [1] * len(nodes)
    # Asking again compiles nothing anywhere.
    herald.import_global(name)
    assert on_every_node(hp_probe.compile_count, path) == [1] + [0] * (len(nodes) - 1)


def test_import_global_takes_a_valid_bytecode_cache_and_no_stale_one(
    nodes, new_module_name, write_module, module_dir
):
    import py_compile

    herald.register_global(hp_probe.record_compiles)

    def compiles(path):
        return on_every_node(hp_probe.compile_count, path)

    fresh = write_module(new_module_name(), "VALUE = 1\n")
    path = os.path.join(module_dir, f"{fresh}.py")
    py_compile.compile(path, doraise=True)
    before = compiles(path)
    assert herald.import_global(fresh).VALUE == 1
    # The cache was valid for the file read: nobody compiled it.
    assert compiles(path) == before

    stale = write_module(new_module_name(), "VALUE = 1\n")
    path = os.path.join(module_dir, f"{stale}.py")
    py_compile.compile(path, doraise=True)
    with open(path, "a") as file:
        file.write("VALUE = 2\n")
    before = compiles(path)
    assert herald.import_global(stale).VALUE == 2
    assert on_every_node(hp_probe.module_attribute, stale, "VALUE") == [2] * len(nodes)
    assert [after - was for after, was in zip(compiles(path), before)] == [1] + [0] * (len(nodes) - 1)


def test_import_global_writes_the_bytecode_cache_as_a_plain_import_would(
    nodes, new_module_name, write_module, module_dir
):
    import importlib.util

    name = write_module(new_module_name(), "VALUE = 3\n")
    path = os.path.join(module_dir, f"{name}.py")
    cached = importlib.util.cache_from_source(path)
    was = on_every_node(hp_probe.write_bytecode, True)
    try:
        herald.import_global(name)
    finally:
        for node, value in zip(nodes, was):
            herald.launch(node, hp_probe.write_bytecode, value).result()
    with open(cached, "rb") as file:
        data = file.read()
    stat = os.stat(path)
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
    assert int.from_bytes(data[12:16], "little") == stat.st_size
    # It holds the module's code (the one every node ran).
    import marshal

    scope = {}
    exec(marshal.loads(data[16:]), scope)
    assert scope["VALUE"] == 3


def test_a_module_imported_by_import_global_reloads_as_usual(nodes, new_module_name, write_module, module_dir):
    name = write_module(new_module_name(), "VALUE = 1\n")
    module = herald.import_global(name)
    with open(os.path.join(module_dir, f"{name}.py"), "a") as file:
        file.write("VALUE = 2\n")
    import importlib

    assert importlib.reload(module).VALUE == 2
    assert hp_probe.import_count(name) == 2


def test_import_global_resolves_relative_names(nodes):
    decoder = herald.import_global(".decoder", package="json")
    assert decoder is json.decoder
    assert on_every_node(hp_probe.has_module, "json.decoder") == [True] * len(nodes)


def test_register_global_runs_once_per_node(nodes, new_module_name):
    token = new_module_name("token")
    assert herald.register_global(hp_probe.record, token, "first") is None
    assert on_every_node(hp_probe.times_recorded, token, "first") == [1] * len(nodes)
    # The same call is the same registration: it runs nowhere again.
    herald.register_global(hp_probe.record, token, "first")
    assert on_every_node(hp_probe.times_recorded, token, "first") == [1] * len(nodes)
    # Other arguments are another registration.
    herald.register_global(hp_probe.record, token, "second")
    assert on_every_node(hp_probe.times_recorded, token, "second") == [1] * len(nodes)


def test_task_decorator_launches_by_name(nodes):
    assert isinstance(hp_probe.square, herald.Task)
    assert hp_probe.square(3) == 9
    futures = hp_probe.square.launch_all(5)
    assert [future.node for future in futures] == nodes
    assert [future.result() for future in futures] == [25] * len(nodes)
    assert all(future.done() for future in futures)
    last = nodes[-1]
    assert hp_probe.square.launch(last, 4).result(timeout=60) == 16


def test_launch_passes_arguments_and_results_by_pickle(nodes):
    results = [herald.launch(node, hp_probe.combine, [1, 2, 3], scale=node + 1) for node in nodes]
    assert [future.result() for future in results] == [
        {"node": node, "total": 6 * (node + 1)} for node in nodes
    ]


def test_launch_runs_functions_defined_here_by_value(nodes):
    offset = 10

    def add_offset(value):  # a closure: sent by value with cloudpickle
        return value + offset + herald.node_id()

    assert [herald.launch(node, add_offset, 1).result() for node in nodes] == [
        11 + node for node in nodes
    ]
    assert [herald.launch(node, lambda: herald.num_nodes()).result() for node in nodes] == [
        len(nodes)
    ] * len(nodes)


def test_a_task_launched_by_name_takes_bytes_only(nodes):
    # An int would otherwise become that many zero bytes, a str an unhelpful error.
    for argument, named in ((3, "not int"), ("a b", "text.encode()")):
        with pytest.raises(TypeError, match="bytes-like") as raised:
            herald.launch(nodes[-1], "hp.no_such_task", argument)
        assert named in str(raised.value)
    with pytest.raises(herald.TaskError, match="is not registered"):
        herald.launch(nodes[-1], "hp.no_such_task", memoryview(b"x")).result()


def test_what_cannot_be_called_is_refused_before_it_travels(nodes):
    before = herald.stats()
    with pytest.raises(TypeError, match=r"register_global\(\) takes a callable, not int"):
        herald.register_global(5)
    with pytest.raises(TypeError, match=r"launch\(\) takes a callable or the name"):
        herald.launch(nodes[-1], 5)
    with pytest.raises(TypeError, match=r"task\(\) takes a callable, not int"):
        herald.task(5)
    after = herald.stats()
    assert after["registrations_requested"] == before["registrations_requested"]
    assert after["launches"] == before["launches"]


def test_on_view_change_refuses_what_it_cannot_call():
    with pytest.raises(TypeError, match="takes a callable, not NoneType"):
        herald.on_view_change(None)


def test_stats_count_this_nodes_work():
    before = herald.stats()
    herald.launch(0, hp_probe.node).result()
    after = herald.stats()
    assert after["node"] == 0 and after["nodes"] == herald.num_nodes()
    assert after["launches"] == before["launches"] + 1
    assert after["tasks_run"] == before["tasks_run"] + 1


def test_type_stubs_declare_the_whole_api():
    stubs = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "pyhost", "python", "herald", "__init__.pyi",
    )
    with open(stubs) as file:
        tree = ast.parse(file.read())
    declared = {
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    assert declared >= set(herald.__all__)
    assert all(getattr(herald, name).__doc__ for name in herald.__all__)
