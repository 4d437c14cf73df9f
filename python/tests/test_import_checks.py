"""What ``import_global`` checks on every node, and how it loads what it checked:
bytecode caches, other finders and loaders, and paths that are not UTF-8."""

import importlib.util
import marshal
import os
import stat
import zipfile

import pytest

import herald
import hp_probe
from hp_suite import on_every_node, per_node_module, write_per_node


def _timestamp_cache(path, code):
    """A bytecode cache for the file at ``path`` as it is now, holding ``code``."""
    status = os.stat(path)
    return (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(status.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (status.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        + marshal.dumps(code)
    )


@pytest.fixture
def own_caches(tmp_path):
    """Every node with a bytecode cache directory of its own (as on separate disks)."""
    old = on_every_node(hp_probe.set_pycache_prefix, str(tmp_path))
    yield str(tmp_path)
    for node, prefix in enumerate(old):
        herald.launch(node, hp_probe.restore_pycache_prefix, prefix).result()


@pytest.fixture
def writing_bytecode(nodes):
    was = on_every_node(hp_probe.write_bytecode, True)
    yield
    for node, value in zip(nodes, was):
        herald.launch(node, hp_probe.write_bytecode, value).result()


def test_only_code_compiled_from_the_checked_bytes_travels(nodes, new_module_name, write_module, module_dir, own_caches):
    # Node 0's own cache of the module claims to fit the file (same time and
    # size) but holds other code. Node 0 runs it, as a plain import there would;
    # no other node runs code that was not compiled from the bytes it checked.
    name = write_module(new_module_name(), "VALUE = 2\n")
    path = os.path.join(module_dir, f"{name}.py")
    cached = importlib.util.cache_from_source(path)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "wb") as file:
        file.write(_timestamp_cache(path, compile("VALUE = 666\n", path, "exec")))
    herald.import_global(name)
    assert on_every_node(hp_probe.module_attribute, name, "VALUE") == [666] + [2] * (len(nodes) - 1)


def test_a_valid_cache_is_neither_rewritten_nor_changed_in_format(
    nodes, new_module_name, write_module, module_dir, writing_bytecode
):
    import py_compile

    for invalidation in (
        py_compile.PycInvalidationMode.TIMESTAMP,
        py_compile.PycInvalidationMode.CHECKED_HASH,
    ):
        name = write_module(new_module_name(), "VALUE = 1\n")
        path = os.path.join(module_dir, f"{name}.py")
        cached = py_compile.compile(path, doraise=True, invalidation_mode=invalidation)
        before = os.stat(cached).st_mtime_ns
        with open(cached, "rb") as file:
            flags = file.read(8)[4:]
        herald.import_global(name)
        assert os.stat(cached).st_mtime_ns == before, invalidation
        with open(cached, "rb") as file:
            assert file.read(8)[4:] == flags, invalidation


def test_a_stale_hash_based_cache_is_rewritten_as_one_with_the_sources_permissions(
    nodes, new_module_name, write_module, module_dir, writing_bytecode
):
    import py_compile

    name = write_module(new_module_name(), "VALUE = 1\n")
    path = os.path.join(module_dir, f"{name}.py")
    cached = py_compile.compile(
        path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
    )
    os.chmod(path, 0o600)
    with open(path, "a") as file:
        file.write("VALUE = 3\n")
    assert herald.import_global(name).VALUE == 3
    with open(cached, "rb") as file:
        data = file.read()
    assert int.from_bytes(data[4:8], "little") == 0b11  # checked hash, as it was
    with open(path, "rb") as file:
        assert data[8:16] == importlib.util.source_hash(file.read())
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600


def test_a_cache_with_unknown_flags_is_not_taken(nodes, new_module_name, write_module, module_dir):
    name = write_module(new_module_name(), "VALUE = 2\n")
    path = os.path.join(module_dir, f"{name}.py")
    with open(path, "rb") as file:
        source = file.read()
    cached = importlib.util.cache_from_source(path)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "wb") as file:
        file.write(
            importlib.util.MAGIC_NUMBER
            + (0b101).to_bytes(4, "little")
            + importlib.util.source_hash(source)
            + marshal.dumps(compile("VALUE = 666\n", path, "exec"))
        )
    herald.import_global(name)
    assert on_every_node(hp_probe.module_attribute, name, "VALUE") == [2] * len(nodes)


def test_a_module_too_deep_to_compile_fails_as_an_import_on_every_node(nodes, new_module_name, write_module):
    name = write_module(new_module_name(), "VALUE = 1" + " + 1" * 300_000 + "\n")
    with pytest.raises(herald.GlobalImportError) as raised:
        herald.import_global(name)
    assert sorted(raised.value.failures) == nodes
    assert "RecursionError" in raised.value.failures[0]


@pytest.mark.leaves_a_node_failed
def test_a_finder_put_before_heralds_does_not_let_a_differing_file_run(nodes, new_module_name, tmp_path):
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    base, name = per_node_module(new_module_name, tmp_path)
    ran = os.path.join(base, "other-version-ran")
    write_per_node(base, name, lambda node: _marking(ran) if node == last else "VALUE = 1\n")
    herald.register_global(hp_probe.put_finder_first, name)
    try:
        _refused_unrun(name, last, ran, f"node {last} would import (so it did not) {name}")
    finally:
        herald.register_global(hp_probe.remove_finder, name)


@pytest.mark.leaves_a_node_failed
def test_a_module_in_a_zip_archive_that_differs_is_refused_before_it_runs(nodes, new_module_name, tmp_path):
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    name = new_module_name()
    ran = os.path.join(str(tmp_path), "other-version-ran")
    for node in nodes:
        archive = os.path.join(str(tmp_path), f"node{node}.zip")
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr(f"{name}.py", _marking(ran) if node == last else "VALUE = 1\n")
    herald.register_global(hp_probe.add_node_archive, str(tmp_path))
    _refused_unrun(name, last, ran, f"node{last}.zip/{name}.py")


def _marking(ran):
    """A module's source that creates the file ``ran`` if it runs."""
    return f"open({ran!r}, 'w').close()\n"


def _refused_unrun(name, last, ran, named):
    """import_global(name) fails on node ``last`` only, naming ``named``, and the
    version there, which would create ``ran``, did not run."""
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    assert list(raised.value.failures) == [last]
    assert named in str(raised.value)
    assert not os.path.exists(ran)


@pytest.mark.leaves_a_node_failed
def test_a_node_without_the_file_the_requester_found_fails(nodes, new_module_name, tmp_path):
    # The last node has a directory of that name instead (a namespace package).
    if len(nodes) < 2:
        pytest.skip("needs a second node")
    last = nodes[-1]
    base, name = per_node_module(new_module_name, tmp_path)
    write_per_node(base, name, lambda node: None if node == last else "VALUE = 1\n")
    os.makedirs(os.path.join(base, f"node{last}", name))
    with pytest.raises(ImportError) as raised:
        herald.import_global(name)
    assert list(raised.value.failures) == [last]
    assert "from no file it could hash" in str(raised.value)


@pytest.mark.leaves_a_node_failed
def test_paths_that_are_not_utf8_are_named_in_errors(nodes, new_module_name, tmp_path):
    directory = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"not-utf8-\xff"))
    os.makedirs(directory)
    herald.register_global(hp_probe.add_path, directory)
    name = new_module_name()
    with open(os.path.join(directory, f"{name}.py"), "w") as file:
        file.write("raise RuntimeError('the body failed')\n")
    with pytest.raises(herald.GlobalImportError) as raised:
        herald.import_global(name)
    assert sorted(raised.value.failures) == nodes
    assert "not-utf8-\\udcff" in raised.value.failures[0]
    assert "the body failed" in raised.value.failures[0]


def test_waiting_for_a_task_on_this_node_from_the_module_being_imported_fails_at_once(
    nodes, new_module_name, write_module
):
    name = write_module(
        new_module_name(),
        "import herald\nimport hp_probe\n"
        "if herald.node_id() == 0:\n    VALUE = herald.launch(0, hp_probe.node).result()\n",
    )
    with pytest.raises(herald.GlobalImportError) as raised:
        herald.import_global(name)
    assert list(raised.value.failures) == [0]
    assert "would never end" in raised.value.failures[0]
