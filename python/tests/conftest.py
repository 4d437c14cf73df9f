"""The herald Python test suite runs inside a herald job: rank 0 runs pytest,
the other ranks serve it, so every test exercises the real runtime on as many
nodes as the job has. Two ways, the same tests:

    herald-python -n 4 -m pytest python/tests              # the embedded interpreter
    herald run -n 4 -- python3 -m pytest python/tests      # a stock python3 with the wheel

Under a stock python3 every rank starts pytest; the ranks other than 0 turn
into servers (`herald.serve()`) before any test is collected.
"""

import faulthandler
import itertools
import os
import site
import sys
import uuid

import pytest

try:
    import herald
except ImportError:  # plain python: nothing here can run
    herald = None

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
HELPERS_DIR = os.path.join(TESTS_DIR, "helpers")
REPO_DIR = os.path.dirname(os.path.dirname(TESTS_DIR))
NATIVETASKS_DIR = os.path.join(REPO_DIR, "examples", "python", "nativetasks")

# A test that deadlocks is stopped (all threads' tracebacks printed, the run
# failed) instead of hanging the suite.
DEADLOCK_TIMEOUT_S = 120


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "leaves_a_node_failed: makes a registration fail on a node other than 0 (runs last)",
    )
    # The test modules import the helpers too (the other nodes get the
    # directory in the helpers_everywhere fixture).
    sys.path.insert(0, HELPERS_DIR)
    if herald is None:
        raise pytest.UsageError(
            "these tests need herald: herald-python -n N -m pytest python/tests, or a python3 "
            "with the herald wheel (python/run-tests.sh builds both and runs them on 1, 2 and "
            "4 nodes)"
        )
    if herald.node_id() != 0:
        herald.serve()


def pytest_collection_modifyitems(session, config, items):
    # A test marked leaves_a_node_failed makes a registration fail on some node
    # but not on node 0. From then on every task node 0 launches there fails,
    # naming it (a task never runs where something its launcher has is missing),
    # so those tests run last, after everything that launches freely.
    items.sort(key=lambda item: item.get_closest_marker("leaves_a_node_failed") is not None)


def pytest_report_header(config):
    how = "herald-python" if herald._herald.embedded() else f"python {sys.version.split()[0]}"
    return f"herald job: {herald.num_nodes()} node(s), this is node {herald.node_id()} ({how})"


@pytest.fixture(autouse=True)
def deadlock_watchdog():
    faulthandler.dump_traceback_later(DEADLOCK_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session", autouse=True)
def helpers_everywhere():
    """`hp_probe` importable on every node (site.addsitedir, sent by name)."""
    herald.register_global(site.addsitedir, HELPERS_DIR)


@pytest.fixture(scope="session")
def nodes():
    return list(range(herald.num_nodes()))


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory):
    """A directory of generated modules, on `sys.path` on every node."""
    path = str(tmp_path_factory.mktemp("herald_modules"))
    herald.register_global(site.addsitedir, path)
    return path


_module_numbers = itertools.count()


@pytest.fixture
def new_module_name():
    """Fresh module names: a module is imported at most once per interpreter,
    so every test needs names no other test (or run) used."""

    def make(prefix="hpm"):
        return f"{prefix}_{next(_module_numbers)}_{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def write_module(module_dir):
    """Writes module `name` with `body`; its first line counts its imports."""

    def write(name, body=""):
        source = f"import hp_probe\nhp_probe.count_import(__name__)\n{body}"
        with open(os.path.join(module_dir, f"{name}.py"), "w") as file:
            file.write(source)
        return name

    return write
