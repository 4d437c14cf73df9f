"""A stock python3 with the herald wheel: every rank runs the script (SPMD),
started by ``python3 -m herald run``; the job ends when every rank's program
has. Skipped under herald-python (its own jobs are in test_cli.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

import herald

pytestmark = pytest.mark.skipif(
    herald._herald.embedded(), reason="needs a stock python3 with the herald wheel"
)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO_DIR, "examples", "python", "nativetasks", "demo.py")


def run(nodes, args, env=None):
    """``python3 -m herald run -n NODES ARGS``, a job of its own."""
    environment = dict(os.environ)
    for variable in ("HERALD_RANK", "HERALD_SIZE", "HERALD_COORDINATOR", "HERALD_SECRET"):
        environment.pop(variable, None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "herald", "run", "-n", str(nodes), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SPMD_SCRIPT = textwrap.dedent(
    """
    import json
    import traceback

    import herald

    class Weird(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}/{b}")

    def boom():
        raise Weird(1, 2)

    me, n = herald.node_id(), herald.num_nodes()
    # Every rank asks for the same global import: one registration for the job.
    assert herald.import_global("json") is json
    assert [herald.launch(k, pow, k, 2).result() for k in range(n)] == [k * k for k in range(n)]
    if me == 0:
        try:
            herald.launch(n - 1, boom).result()
        except Weird as error:
            remote = error.__cause__.text
            assert __file__ in remote and "<dynamic-code>" not in remote, remote
            print("caught Weird from node", n - 1)
    print("rank", me, "of", n, "done")
    """
)


def test_every_rank_runs_the_script(tmp_path):
    script = tmp_path / "spmd_script.py"
    script.write_text(SPMD_SCRIPT)
    job = run(3, [str(script)])
    assert job.returncode == 0, job.stdout + job.stderr
    for rank in range(3):
        assert f"[{rank}] rank {rank} of 3 done" in job.stdout
    assert "[0] caught Weird from node 2" in job.stdout


def test_a_rank_that_ends_early_serves_the_others(tmp_path):
    script = tmp_path / "early.py"
    script.write_text(
        "import herald\n"
        "if herald.node_id() == 0:\n"
        "    n = herald.num_nodes()\n"
        "    assert [herald.launch(k, herald.node_id).result() for k in range(n)] == list(range(n))\n"
        "    print('rank 0 was served')\n"
    )
    job = run(3, [str(script)])
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] rank 0 was served" in job.stdout


def test_the_exit_status_is_the_first_failing_ranks(tmp_path):
    job = run(2, ["-c", "import herald, sys; sys.exit(5 if herald.node_id() == 1 else 0)"])
    assert job.returncode == 5, job.stdout + job.stderr


def test_native_tasks_of_a_ctypes_library_run_everywhere():
    """The Legion #748 scenario under a stock python3: rank 0 alone imports the
    package whose library registers native tasks from its constructor."""
    library = os.environ.get("NATIVETASKS_LIBRARY")
    if not library:
        pytest.fail("$NATIVETASKS_LIBRARY is not set: run python/run-tests.sh")
    job = run(3, [DEMO], env={"NATIVETASKS_LIBRARY": library})
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] native tasks ran on all 3 node(s)" in job.stdout
