"""A stock python3 with the herald wheel: every rank runs the script (SPMD),
started by ``python3 -m herald run``; the job ends when every rank's program
has. Skipped under herald-python (its own jobs are in test_cli.py)."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import herald

pytestmark = pytest.mark.skipif(
    herald._herald.embedded(), reason="needs a stock python3 with the herald wheel"
)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO_DIR, "examples", "python", "nativetasks", "demo.py")


def _outside_any_job():
    """This process's environment without the variables of the job it runs in
    (under herald run or herald-python), so that a launcher started with it
    starts a job of its own."""
    environment = dict(os.environ)
    for variable in ("HERALD_RANK", "HERALD_SIZE", "HERALD_COORDINATOR", "HERALD_SECRET"):
        environment.pop(variable, None)
    return environment


def run(nodes, args, env=None, timeout=120):
    """``python3 -m herald run -n NODES ARGS``, a job of its own."""
    environment = _outside_any_job()
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "herald", "run", "-n", str(nodes), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
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


CHILD_LEFT_SCRIPT = textwrap.dedent(
    """
    import os
    import subprocess
    import sys
    import time

    pid_file = sys.argv[1]
    if os.environ["HERALD_RANK"] == "1":
        # Fails once rank 0's child is running.
        deadline = time.monotonic() + 60
        while not os.path.exists(pid_file):
            assert time.monotonic() < deadline, "rank 0 started no child"
            time.sleep(0.01)
        sys.exit(3)
    child = subprocess.Popen(["sleep", "600"])
    with open(pid_file + ".tmp", "w") as file:
        file.write(str(child.pid))
    os.rename(pid_file + ".tmp", pid_file)
    child.wait()
    """
)


def test_a_failing_rank_stops_what_the_others_started(tmp_path):
    """Stopping rank 0 after rank 1 failed stops its child too: left running,
    the child would hold rank 0's output pipe and keep the launcher waiting
    for ten minutes."""
    _assert_failing_job_leaves_no_child(tmp_path, "child_left.py", CHILD_LEFT_SCRIPT, "rank 0")


FAILING_LEAVES_A_CHILD_SCRIPT = textwrap.dedent(
    """
    import os
    import subprocess
    import sys
    import time

    pid_file = sys.argv[1]
    if os.environ["HERALD_RANK"] == "1":
        child = subprocess.Popen(["sleep", "600"])
        with open(pid_file + ".tmp", "w") as file:
            file.write(str(child.pid))
        os.rename(pid_file + ".tmp", pid_file)
        os._exit(3)
    time.sleep(600)
    """
)


def test_what_a_failing_rank_left_running_is_stopped(tmp_path):
    """Rank 1 fails leaving a child running, which holds rank 1's output pipe:
    the launcher stops it too rather than wait for it."""
    _assert_failing_job_leaves_no_child(
        tmp_path, "failing_leaves_a_child.py", FAILING_LEAVES_A_CHILD_SCRIPT, "rank 1"
    )


def _assert_failing_job_leaves_no_child(tmp_path, name, source, whose):
    """Runs ``python3 -m herald run -n 2`` on ``source``, in which rank 1 fails
    (status 3) and ``whose`` rank writes the pid of a child it started to the
    file named by its first argument: the launcher ends within a minute and the
    child is gone. (Its exit ended the launcher's reading of that rank's output,
    if perhaps its new parent has not reaped it yet.)"""
    script = tmp_path / name
    script.write_text(source)
    pid_file = tmp_path / "child.pid"
    child = None
    try:
        try:
            job = run(2, [str(script), str(pid_file)], timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the launcher still waited a minute after rank 1 failed")
        child = int(pid_file.read_text())
        assert job.returncode == 3, job.stdout + job.stderr
        assert _state(child) in (None, "Z"), f"{whose}'s child {child} outlived the job"
    finally:
        if child is None and pid_file.exists():
            child = int(pid_file.read_text())
        if child is not None:
            _kill_left([child])

DECLARED_DOWN_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import time

    import herald

    def wait_for(condition, what):
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    pid_file = sys.argv[1]
    me = herald.node_id()
    open(f"{pid_file}.joined.{me}", "w").close()
    if me == 2:
        # Once every rank has joined (leaving before would fail their joining).
        wait_for(lambda: all(os.path.exists(f"{pid_file}.joined.{k}") for k in range(3)), "join")
        with open(pid_file + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        os._exit(88)  # the status of a rank the job declared down
    if me == 0:
        # Until the launcher has reaped rank 2 (its /proc entry outlives it
        # until then), so that it has seen the status.
        wait_for(
            lambda: os.path.exists(pid_file)
            and not os.path.exists(f"/proc/{open(pid_file).read()}"),
            "rank 2 was not reaped",
        )
        assert herald.launch(1, herald.node_id).result() == 1
        print("the job went on without rank 2")
    """
)


def test_a_rank_declared_down_does_not_stop_the_others(tmp_path):
    """As under ``herald run``: the job goes on without it; the status is
    still non-zero at the end."""
    script = tmp_path / "declared_down.py"
    script.write_text(DECLARED_DOWN_SCRIPT)
    job = run(3, [str(script), str(tmp_path / "rank2.pid")])
    assert "stopping the others" not in job.stderr, job.stdout + job.stderr
    assert "[0] the job went on without rank 2" in job.stdout, job.stdout + job.stderr
    assert "rank 2 was declared down by the job (exit status 88)" in job.stderr
    assert job.returncode == 88, job.stdout + job.stderr


def test_a_rank_fails_when_rank_0_went_down_before_ending_the_job(tmp_path):
    """Started by hand (a launcher would stop rank 1 once rank 0 fails)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{probe.getsockname()[1]}"
    environment = dict(os.environ)
    environment.pop("HERALD_SECRET_FILE", None)
    # A short peer timeout: having lost rank 0, rank 1 waits that long for a
    # verdict that it was declared down, before it fails.
    environment.update(
        HERALD_SIZE="2",
        HERALD_COORDINATOR=coordinator,
        HERALD_SECRET=secrets.token_hex(32),
        HERALD_HEARTBEAT_MS="200",
        HERALD_PEER_TIMEOUT_MS="1000",
    )
    # Rank 0 leaves without ending the job, once rank 1 has joined (leaving
    # before would fail its joining); rank 1's program ends normally.
    code = textwrap.dedent(
        """
        import os, sys, time
        import herald

        joined = sys.argv[1]
        if herald.node_id() == 1:
            open(joined, "w").close()
        else:
            deadline = time.monotonic() + 60
            while not os.path.exists(joined):
                assert time.monotonic() < deadline, "rank 1 did not join"
                time.sleep(0.01)
            os._exit(3)
        """
    )
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "joined")],
            env={**environment, "HERALD_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate(timeout=60) for rank in ranks]
    assert ranks[0].returncode == 3, outputs
    assert ranks[1].returncode == 1, outputs
    assert "rank 0 went down before ending the job" in outputs[1][1], outputs


CHILDREN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import os
    import subprocess
    import sys

    import herald

    def square(value):
        return value * value

    if __name__ == "__main__":
        me, n = herald.node_id(), herald.num_nodes()
        # Workers that import this script again, and with it herald.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            assert pool.map(square, [1, 2, 3]) == [1, 4, 9]
        # A child started afresh inherits the job's variables; its rank is taken.
        child = subprocess.run(
            [sys.executable, "-c", "import herald; herald.node_id()"],
            capture_output=True, text=True, timeout=60,
        )
        assert child.returncode == 1, child.stderr
        assert f"is a child of process {os.getpid()}, which is the job's node" in child.stderr
        # A fork shares this process's links: it must leave them alone, also at exit.
        pid = os.fork()
        if pid == 0:
            try:
                herald.node_id()
            except herald.HeraldError as error:
                assert "was forked from process" in str(error), error
                sys.exit(0)
            sys.exit(1)
        assert os.waitpid(pid, 0)[1] == 0
        assert [herald.launch(k, herald.node_id).result() for k in range(n)] == list(range(n))
        print("rank", me, "children stayed out")
    """
)


def test_children_of_a_rank_stay_out_of_its_job(tmp_path):
    script = tmp_path / "children.py"
    script.write_text(CHILDREN_SCRIPT)
    job = run(2, [str(script)])
    assert job.returncode == 0, job.stdout + job.stderr
    for rank in range(2):
        assert f"[{rank}] rank {rank} children stayed out" in job.stdout, job.stdout + job.stderr


def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    script = tmp_path / "waits.py"
    script.write_text(
        "import os, sys, herald\n"
        "with open(f'{sys.argv[1]}.{herald.node_id()}', 'w') as file:\n"
        "    file.write(str(os.getpid()))\n"
        "sys.stdin.read() if herald.node_id() == 0 else herald.serve()\n"
    )
    environment = _outside_any_job()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "herald", "run", "-n", "2", str(script), str(tmp_path / "pid")],
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids = []
    try:
        for rank in range(2):
            path = tmp_path / f"pid.{rank}"
            deadline = time.monotonic() + 60
            while not path.exists() or not path.read_text():
                assert time.monotonic() < deadline, f"rank {rank} did not start"
                time.sleep(0.01)
            pids.append(int(path.read_text()))
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
        # It reaped its ranks before it exited: none is left running.
        _assert_gone(pids)
    finally:
        _kill_left(pids)
        launcher.kill()
        launcher.wait()


def test_native_tasks_of_a_ctypes_library_run_everywhere():
    """The Legion #748 scenario under a stock python3: rank 0 alone imports the
    package whose library registers native tasks from its constructor."""
    library = os.environ.get("NATIVETASKS_LIBRARY")
    if not library:
        pytest.fail("$NATIVETASKS_LIBRARY is not set: run python/run-tests.sh")
    job = run(3, [DEMO], env={"NATIVETASKS_LIBRARY": library})
    assert job.returncode == 0, job.stdout + job.stderr
    assert "[0] native tasks ran on all 3 node(s)" in job.stdout


def test_a_rank_that_cannot_be_started_stops_the_started_ones(tmp_path):
    """With too few file descriptors for the ranks' pipes (a hard limit it
    cannot raise), the launcher says which rank it could not start, and stops
    the ranks it had started instead of leaving them waiting for the job."""
    import resource

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    script = tmp_path / "starts.py"
    script.write_text(
        "import os, sys\n"
        "open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close()\n"
        "import herald\n"
    )
    pids = tmp_path / "pids"
    pids.mkdir()
    environment = _outside_any_job()
    job = subprocess.run(
        [sys.executable, "-m", "herald", "run", "-n", "40", str(script), str(pids)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=few_descriptors,
    )
    started = [int(name) for name in os.listdir(pids)]
    try:
        assert job.returncode != 0, job.stdout + job.stderr
        assert "cannot start rank" in job.stderr, job.stderr
        assert "Traceback" not in job.stderr, job.stderr
        # It reaped the ranks it had started before it exited: none is left.
        _assert_gone(started)
    finally:
        _kill_left(started)


def _assert_gone(pids):
    """Every process in ``pids`` has exited and been reaped."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _state(pid):
    """The state letter of process ``pid`` (``Z``: a zombie), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _kill_left(pids):
    """Kills whatever of ``pids`` a failed test left running."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_launcher_gives_rank_0_a_port_no_outgoing_connection_can_take():
    """Below the kernel's ephemeral range, where an outgoing connection could
    take it before rank 0 binds it; and free to bind."""
    from herald import __main__ as launcher

    with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
        low = int(file.read().split()[0])
    if low <= 1024:
        pytest.skip(f"the ephemeral range starts at {low}: nothing lies below it")
    for _ in range(20):
        port = launcher._free_port()
        assert 1024 <= port < low, f"port {port} is in the ephemeral range from {low}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_stopped_rank_is_named_with_how_to_resume_it(tmp_path):
    """A rank stopped by a signal can neither end nor learn that the job declared
    it down: the launcher says which one, with its pid, and the job finishes once
    it is resumed as the message says."""
    script = tmp_path / "stops.py"
    script.write_text(
        "import os, signal, sys, herald\n"
        "if herald.node_id() == 1:\n"
        "    with open(sys.argv[1], 'w') as file:\n"
        "        file.write(str(os.getpid()))\n"
        "    os.kill(os.getpid(), signal.SIGSTOP)\n"
        "assert herald.import_global('json')\n"
        "print('rank', herald.node_id(), 'done')\n"
    )
    pid_file = tmp_path / "pid"
    environment = _outside_any_job()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "herald", "run", "-n", "2", str(script), str(pid_file)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = launcher.stderr.readline()
        assert "rank 1 (pid " in line and "was stopped by SIGSTOP" in line, line
        pid = int(line.split("(pid ")[1].split(")")[0])
        assert f"`kill -CONT {pid}` resumes it" in line, line
        os.kill(pid, signal.SIGCONT)
        out, err = launcher.communicate(timeout=120)
        assert launcher.returncode == 0, err
        assert "[1] rank 1 done" in out and "[0] rank 0 done" in out, out
    finally:
        launcher.kill()
        launcher.wait()
        # A failed test must not leave the stopped rank behind.
        if pid_file.exists() and pid_file.read_text():
            _kill_left([int(pid_file.read_text())])


def test_every_rank_that_failed_on_its_own_is_named(capfd):
    """A rank that aborts often takes the one that loses it down too, and which
    exit the launcher sees first is chance: both are named, and the rank it
    stopped is not."""
    from herald import __main__ as launcher

    def start(script):
        return subprocess.Popen(["sh", "-c", script], start_new_session=True)

    ranks = [start("exit 1"), start("kill -ABRT $$"), start("exec sleep 60")]
    try:
        for process in ranks[:2]:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        code = launcher._wait(ranks)
        err = capfd.readouterr().err
        assert code in (1, 128 + signal.SIGABRT), err
        named = {
            line.split()[4]
            for line in err.splitlines()
            if line.startswith("python3 -m herald: rank ") and "failed" in line
        }
        assert named == {"0", "1"}, err
        assert f"exit status -{int(signal.SIGABRT)}" in err, err
    finally:
        _kill_left([process.pid for process in ranks])
        for process in ranks:
            process.wait()


def test_bad_command_lines_are_refused():
    def launcher(*args):
        return subprocess.run(
            [sys.executable, "-m", "herald", *args],
            env=_outside_any_job(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # Nothing to run is a usage error, as for herald-python and `herald`.
    bare = launcher()
    assert bare.returncode == 2 and "nothing to run" in bare.stderr, bare
    assert "usage: python3 -m herald run" in bare.stderr
    helped = launcher("--help")
    assert helped.returncode == 0 and "usage: python3 -m herald run" in helped.stdout
    assert launcher("frob").returncode == 2
    assert launcher("run", "-n", "0", "x.py").returncode == 2
