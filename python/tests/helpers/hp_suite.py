"""Test-side helpers (run on rank 0, the node that runs pytest)."""

import os
import subprocess

import herald


def on_every_node(fn, *args, **kwargs):
    """Runs fn on every node at once; its results by node."""
    futures = [herald.launch(node, fn, *args, **kwargs) for node in range(herald.num_nodes())]
    return [future.result() for future in futures]


def herald_python():
    """The herald-python binary, to start jobs of its own: this very process under
    herald-python, else ``$HERALD_PYTHON`` (python/run-tests.sh sets it)."""
    if herald._herald.embedded():
        return os.readlink("/proc/self/exe")
    path = os.environ.get("HERALD_PYTHON")
    if not path:
        raise RuntimeError("set HERALD_PYTHON to the herald-python binary for these tests")
    return path


def run_job(args, env=None, cwd=None, timeout=120, unset=()):
    """Runs `herald-python ARGS` (a job of its own) and returns the completed
    process; `env` adds variables, `unset` removes some."""
    environment = dict(os.environ)
    for variable in ("HERALD_RANK", "HERALD_SIZE", "HERALD_COORDINATOR", "HERALD_SECRET", *unset):
        environment.pop(variable, None)
    environment.update(env or {})
    return subprocess.run(
        [herald_python(), *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
