"""herald-python as a program: what rank 0 runs, how functions of the script
travel, and the exit status. Each test starts a job of its own."""

import textwrap

from hp_suite import run_job

MAIN_SCRIPT = textwrap.dedent(
    """
    import herald

    SCALE = 3

    def times(value):
        return value * SCALE

    class Point:
        def __init__(self, x):
            self.x = x

    @herald.task
    def length(point):
        return abs(point.x)

    seen = []

    def remember(value):
        seen.append((herald.node_id(), value))

    n = herald.num_nodes()
    assert [herald.launch(k, times, k).result() for k in range(n)] == [3 * k for k in range(n)]
    assert [f.result() for f in length.launch_all(Point(-2))] == [2] * n
    herald.register_global(remember, "x")
    # By value: each node ran it against its own copy of `seen`, not this one.
    assert seen == []
    print("functions of __main__ ran on", n, "nodes")
    """
)


def test_functions_of_the_main_script_travel_by_value(tmp_path):
    script = tmp_path / "main_by_value.py"
    script.write_text(MAIN_SCRIPT)
    job = run_job(["-n", "2", str(script)])
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] functions of __main__ ran on 2 nodes" in job.stdout


def test_exit_status_is_the_programs(tmp_path):
    job = run_job(["-c", "import sys; sys.exit(3)"])
    assert job.returncode == 3
    job = run_job(["-c", "raise ValueError('the program failed')"])
    assert job.returncode == 1
    assert "ValueError: the program failed" in job.stderr
    # The traceback starts in the program, not in herald-python's runner.
    assert "herald/_main.py" not in job.stderr
    job = run_job(["-n", "2", "-c", "raise ValueError('the program failed')"])
    assert job.returncode != 0
    assert "[0] ValueError: the program failed" in job.stderr


def test_module_mode_sets_argv_and_path(tmp_path):
    (tmp_path / "hp_cli_main.py").write_text(
        "import sys, herald\nprint('argv', sys.argv[1:], sys.argv[0].endswith('hp_cli_main.py'),"
        " herald.num_nodes())\n"
    )
    job = run_job(["-n", "2", "-m", "hp_cli_main", "a", "-b"], cwd=tmp_path)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] argv ['a', '-b'] True 2" in job.stdout


def test_bad_command_lines_are_refused():
    job = run_job([])
    assert job.returncode == 2 and "nothing to run" in job.stderr
    job = run_job(["-n", "0", "x.py"])
    assert job.returncode == 2 and "at least 1" in job.stderr
    job = run_job(["-m"])
    assert job.returncode == 2 and "-m needs an argument" in job.stderr
    job = run_job(["hp_no_such_script.py"])
    assert job.returncode == 2 and "can't open file" in job.stderr


def test_exceptions_and_tracebacks_of_the_main_script(tmp_path):
    script = tmp_path / "main_weird.py"
    script.write_text(
        textwrap.dedent(
            """
            import herald

            class Weird(Exception):
                def __init__(self, a, b):
                    super().__init__(f"{a}/{b}")

            def boom():
                raise Weird(1, 2)

            try:
                herald.launch(1, boom).result()
            except Weird as error:
                remote = error.__cause__.text
                assert __file__ in remote and "<dynamic-code>" not in remote, remote
                assert "raise Weird(1, 2)" in remote, remote
                print("caught Weird")
            """
        )
    )
    job = run_job(["-n", "2", str(script)])
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] caught Weird" in job.stdout


def test_a_forked_child_ending_leaves_the_job_alone(tmp_path):
    """A child the program forks runs herald-python's end of the program too:
    it exits there, leaving the links it shares with its parent alone."""
    script = tmp_path / "forks.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            import herald

            pid = os.fork()
            if pid == 0:
                try:
                    herald.node_id()
                except herald.HeraldError as error:
                    assert "was forked from process" in str(error), error
                    sys.exit(7)
                sys.exit(1)
            assert os.waitpid(pid, 0)[1] >> 8 == 7
            n = herald.num_nodes()
            assert [herald.launch(k, herald.node_id).result() for k in range(n)] == list(range(n))
            print("the job outlived the fork")
            """
        )
    )
    job = run_job(["-n", "2", str(script)], timeout=60)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] the job outlived the fork" in job.stdout
