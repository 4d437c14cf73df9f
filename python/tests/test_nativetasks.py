"""The scenario herald exists for (Legion issue #748): a Python module imported on
one node loads a native library whose tasks every node must run.

The libraries are built by python/run-tests.sh (cc -shared -fPIC) into a
directory every node allows; their paths come in the environment."""

import os
import sys

import pytest

import herald
from hp_suite import run_job

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVETASKS_DIR = os.path.join(REPO_DIR, "examples", "python", "nativetasks")


def built(variable):
    path = os.environ.get(variable)
    if not path or not os.path.isfile(path):
        pytest.fail(f"${variable} does not name a built library: run python/run-tests.sh")
    return path


def test_plain_import_makes_native_tasks_run_on_every_node(nodes):
    built("NATIVETASKS_LIBRARY")
    sys.path.insert(0, NATIVETASKS_DIR)
    import nativetasks  # no herald call: the library's constructor does the rest

    squares = [nativetasks.square(node, node + 3) for node in nodes]
    where = [nativetasks.where(node) for node in nodes]
    assert [future.result() for future in squares] == [(node + 3) ** 2 for node in nodes]
    assert [future.result() for future in where] == nodes


def test_load_library_waits_until_every_node_has_it(nodes):
    plugin = herald.load_library(built("HERALD_EXAMPLE_PLUGIN"))
    assert hasattr(plugin, "example_reverse")
    futures = [herald.launch(node, "example.reverse", b"herald") for node in nodes]
    assert [future.result() for future in futures] == [b"dlareh"] * len(nodes)


def test_without_global_registration_remote_launches_fail():
    """The same import and launches in a job whose library registers its tasks on
    the loading node only (built with -DNATIVETASKS_LOCAL_ONLY)."""
    demo = os.path.join(NATIVETASKS_DIR, "demo.py")
    local = run_job(["-n", "2", demo], env={"NATIVETASKS_LIBRARY": built("NATIVETASKS_LOCAL_LIBRARY")})
    assert local.returncode != 0
    assert "ran on node 0" in local.stdout
    assert "task 'nativetasks.square' is not registered on node 1" in local.stdout
    ok = run_job(["-n", "2", demo], env={"NATIVETASKS_LIBRARY": built("NATIVETASKS_LIBRARY")})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[0] native tasks ran on all 2 node(s)" in ok.stdout
