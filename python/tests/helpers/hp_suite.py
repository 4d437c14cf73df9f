"""Test-side helpers (run on rank 0, the node that runs pytest)."""

import os
import subprocess

import herald
import hp_probe


def on_every_node(fn, *args, **kwargs):
    """Runs fn on every node at once; its results by node."""
    futures = [herald.launch(node, fn, *args, **kwargs) for node in range(herald.num_nodes())]
    return [future.result() for future in futures]


def per_node_module(new_module_name, tmp_path):
    """(base, name): a fresh module name, and a directory under which each node
    has its own directory ``node<N>`` first on its ``sys.path``."""
    base = str(tmp_path)
    herald.register_global(hp_probe.add_node_path, base)
    return base, new_module_name()


def write_per_node(base, name, source_of):
    """Writes module ``name`` into every node's own directory under ``base``:
    ``source_of(node)``, or no file there where that is None."""
    for node in range(herald.num_nodes()):
        directory = os.path.join(base, f"node{node}")
        os.makedirs(directory, exist_ok=True)
        source = source_of(node)
        if source is not None:
            with open(os.path.join(directory, f"{name}.py"), "w") as file:
                file.write(source)


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
