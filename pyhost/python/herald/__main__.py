"""``python3 -m herald run -n N PROGRAM``: a job of N processes of this python3
on this machine, for people without herald's Rust binaries.

    python3 -m herald run -n 4 script.py ARGS
    python3 -m herald run -n 4 -m pytest tests/
    python3 -m herald run -n 2 -c "import herald; print(herald.node_id())"

Each rank runs ``python3 PROGRAM`` with the environment ``herald run`` gives
(``HERALD_RANK``, ``HERALD_SIZE``, ``HERALD_COORDINATOR`` on a free loopback
port, a fresh ``HERALD_SECRET``); ``import herald`` joins the job from it. Output
lines are prefixed with the rank (``[2] ...``) when N > 1. When a rank fails,
the others are stopped; the exit status is the first failing rank's, else 0. A
rank that cannot be started (too few file descriptors or processes) stops the
ranks started before it, and the exit status is 1.
SIGINT (Ctrl-C), SIGTERM or SIGHUP sent to it stops every rank (the same signal, then
SIGKILL after a grace period) and exits with 128 + the signal's number. Each
rank runs in a session of its own, so stopping it stops what it started too. A rank that exits because the job declared it down (status 88, as ``herald
run`` treats it) does not stop the others: the job goes on without it, and the
exit status is still non-zero at the end.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading

USAGE = """usage: python3 -m herald run -n N [--] SCRIPT [ARGS...]
       python3 -m herald run -n N [--] -m MODULE [ARGS...]
       python3 -m herald run -n N [--] -c CODE [ARGS...]

Runs N processes of this python3 as one herald job on this machine; every rank
runs the program (import herald joins the job)."""

# Longest the other ranks get to stop after SIGTERM before they are killed.
STOP_GRACE_S = 5

# The exit status of a rank the job declared down (herald node's, herald
# run's): the job goes on without it.
FENCED_EXIT = 88


def main(argv):
    try:
        nodes, program = _parse(argv)
    except ValueError as error:
        print(f"python3 -m herald: {error}\n\n{USAGE}", file=sys.stderr)
        return 2
    if nodes is None:
        print(USAGE)
        return 0
    return _run(nodes, program)


def _parse(argv):
    """(nodes, program), or (None, None) for help; ValueError if wrong."""
    if not argv:
        raise ValueError("nothing to run: give the command, run")
    if argv[0] in ("-h", "--help"):
        return None, None
    if argv[0] != "run":
        raise ValueError(f"unknown command {argv[0]!r}: the command is run")
    args = list(argv[1:])
    nodes = None
    while args:
        arg = args[0]
        if arg in ("-h", "--help"):
            return None, None
        if arg in ("-n", "--nodes"):
            if len(args) < 2:
                raise ValueError("-n needs the number of nodes")
            nodes, args = _nodes(args[1]), args[2:]
        elif arg.startswith("--nodes="):
            nodes, args = _nodes(arg[len("--nodes=") :]), args[1:]
        elif arg.startswith("-n") and len(arg) > 2:
            nodes, args = _nodes(arg[2:]), args[1:]
        elif arg == "--":
            args = args[1:]
            break
        else:
            break
    if nodes is None:
        raise ValueError("give the number of nodes with -n N")
    if not args:
        raise ValueError("nothing to run: give a script, -m MODULE or -c CODE")
    return nodes, args


def _nodes(text):
    try:
        nodes = int(text)
    except ValueError:
        nodes = 0
    if nodes < 1:
        raise ValueError(f"-n takes a number of nodes of at least 1, not {text!r}")
    return nodes


def _run(nodes, program):
    environment = dict(os.environ)
    environment.update(
        HERALD_RANK="",
        HERALD_SIZE=str(nodes),
        HERALD_COORDINATOR=f"127.0.0.1:{_free_port()}",
        HERALD_SECRET=secrets.token_hex(32),
    )
    environment.pop("HERALD_SECRET_FILE", None)
    output_lock = threading.Lock()
    ranks = []
    pumps = []
    # SIGTERM (a batch system, `timeout`) stops the ranks too, as Ctrl-C does,
    # instead of leaving them running without their launcher; so does SIGHUP
    # (the terminal went away), which the ranks, in sessions of their own, do
    # not get from the terminal.
    previous = {signum: signal.signal(signum, _terminated) for signum in _STOP_SIGNALS}
    try:
        return _start_and_wait(nodes, program, environment, output_lock, ranks, pumps)
    except _Terminated as terminated:
        signum = terminated.args[0]
        try:
            _stop(ranks, signum)
        except _Terminated:
            # A second signal: no more grace.
            for process in ranks:
                if process.poll() is None:
                    _signal_group(process, signal.SIGKILL)
            for process in ranks:
                process.wait()
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# The signals that stop the job, passed on to the ranks (SIGINT arrives as
# KeyboardInterrupt).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived (its number is the argument)."""


def _terminated(signum, frame):
    raise _Terminated(signum)


def _start_and_wait(nodes, program, environment, output_lock, ranks, pumps):
    _raise_descriptor_limit(nodes)
    for rank in range(nodes):
        environment["HERALD_RANK"] = str(rank)
        try:
            process = subprocess.Popen(
                [sys.executable, *program],
                env=dict(environment),
                stdin=subprocess.DEVNULL if rank else None,
                stdout=subprocess.PIPE if nodes > 1 else None,
                stderr=subprocess.PIPE if nodes > 1 else None,
                # Its own process group (and session), so that stopping the rank
                # stops what it started too: a child left running would keep
                # the rank's output pipes open, and this launcher waiting.
                start_new_session=True,
            )
        except OSError as error:
            # The ranks started so far would wait for the others until their
            # job failed to form: they are stopped, as when a rank fails.
            print(
                f"python3 -m herald: cannot start rank {rank} of {nodes}: {error}; "
                f"stopping the {len(ranks)} rank(s) started",
                file=sys.stderr,
            )
            _stop(ranks)
            for pump in pumps:
                pump.join()
            return 1
        ranks.append(process)
        if nodes > 1:
            for source, sink in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                pump = threading.Thread(
                    target=_pump, args=(rank, source, sink, output_lock), daemon=True
                )
                pump.start()
                pumps.append(pump)
    try:
        status = _wait(ranks)
    except KeyboardInterrupt:
        # The ranks, in sessions of their own, did not get the terminal's
        # Ctrl-C: they get it from here.
        _stop(ranks, signal.SIGINT)
        status = 128 + signal.SIGINT
    for pump in pumps:
        pump.join()
    return status


def _wait(ranks):
    """Waits for every rank; on the first failure, stops the others (a rank
    the job declared down is not one: the others go on without it). Returns
    the first failing (or declared down) rank's exit status, else 0."""
    failed = threading.Event()
    first = []
    stopping = []
    lock = threading.Lock()

    def watch(rank, process):
        def stopped(signum):
            # A stopped rank can neither end nor learn that the job declared it
            # down: the job would wait for it in silence.
            pid = process.pid
            print(
                f"python3 -m herald: rank {rank} (pid {pid}) was stopped by {_signal_name(signum)}; "
                "the job waits for it (its peers declare it down once it has been silent for "
                f"the peer timeout): `kill -CONT {pid}` resumes it, `kill {pid}` ends it",
                file=sys.stderr,
                flush=True,
            )

        code = _exit_code_without_reaping(process, stopped)
        if code not in (None, 0, FENCED_EXIT):
            with lock:
                # The first failure stops the job: what this rank left running
                # (in its session) goes too, while its group id is still its
                # own (not reaped yet, and nobody polls before `failed`).
                if not failed.is_set():
                    _signal_group(process, signal.SIGTERM)
        code = process.wait()
        if code == FENCED_EXIT:
            print(
                f"python3 -m herald: rank {rank} was declared down by the job (exit status "
                f"{code}); the other ranks go on without it",
                file=sys.stderr,
            )
        if code != 0:
            with lock:
                if not first:
                    first.append((rank, code))
                if code != FENCED_EXIT and not stopping:
                    stopping.append((rank, code))
            if code != FENCED_EXIT:
                failed.set()

    watchers = [
        threading.Thread(target=watch, args=(rank, process), daemon=True)
        for rank, process in enumerate(ranks)
    ]
    for watcher in watchers:
        watcher.start()
    done = threading.Thread(target=lambda: [w.join() for w in watchers], daemon=True)
    done.start()
    while done.is_alive():
        # Woken by the first failure, or when every rank has exited.
        if failed.wait(timeout=0.5):
            break
    if not first:
        done.join()
        return 0
    if stopping:
        _stop_after_failure(ranks, stopping[0], lock)
    code = first[0][1]
    return code if code > 0 else 128 - code


def _stop_after_failure(ranks, failure, lock):
    """Names the rank that failed (``failure``: rank, exit code) and every other
    that had failed on its own by then, and stops those still running. A rank
    that aborts often takes the one that loses it down too, and which exit a
    watcher saw first is chance."""
    rank, code = failure
    with lock:
        also = _failed_already(ranks, skip=rank)
        still_running = [process for process in ranks if process.poll() is None]
    if still_running:
        print(
            f"python3 -m herald: rank {rank} failed (exit status {code}); stopping the others",
            file=sys.stderr,
        )
    for other, other_code in also:
        print(
            f"python3 -m herald: rank {other} had failed too (exit status {other_code})",
            file=sys.stderr,
        )
    _stop(still_running)


def _failed_already(ranks, skip):
    """The ranks other than ``skip`` that have already failed (not merely been
    declared down), with their exit codes, reaped or not (read without reaping)."""
    failed = []
    for rank, process in enumerate(ranks):
        code = process.returncode
        if code is None:
            try:
                info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                # Its watcher is reaping it this very moment: it has exited.
                info = None
                code = process.wait()
            if info is not None:
                code = _exit_code(info)
            elif code is None:
                continue
        if rank != skip and code not in (0, FENCED_EXIT):
            failed.append((rank, code))
    return failed


def _stop(processes, signum=signal.SIGTERM):
    """Stops each rank's process group: ``signum``, then SIGKILL after a grace
    period."""
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signum)
    for process in processes:
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _exit_code_without_reaping(process, on_stop=lambda signum: None):
    """Waits until ``process`` has exited and returns its exit code (minus the
    signal that ended it), leaving it unreaped; None if it cannot tell. Calls
    ``on_stop`` with the signal each time one stops the process."""
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT)
        except (AttributeError, OSError):
            return None
        if info is None:
            return None
        if info.si_code != os.CLD_STOPPED:
            return _exit_code(info)
        # Take this stop's report (WNOWAIT left it), and only it: WSTOPPED alone
        # never takes an exit, which stays for the wait that reaps the rank.
        try:
            os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WNOHANG)
        except OSError:
            pass
        on_stop(info.si_status)


def _exit_code(info):
    """The exit code a ``waitid`` result reports, minus the signal that ended the
    process, as ``Popen.returncode`` gives it."""
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _signal_name(signum):
    """``SIGSTOP`` for 19, or the number if it has no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _signal_group(process, signum):
    """Sends ``signum`` to the process group a rank leads. Only for a rank not
    reaped yet (``poll()`` gave None, or ``wait`` timed out), whose pid, and so
    its group's id, nothing else can have."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _pump(rank, source, sink, lock):
    """Copies one rank's stream, line by line, prefixed with its rank."""
    prefix = f"[{rank}] ".encode()
    out = sink.buffer if hasattr(sink, "buffer") else None
    for line in iter(source.readline, b""):
        with lock:
            if out is not None:
                out.write(prefix + line)
                out.flush()
            else:
                sink.write((prefix + line).decode(errors="replace"))
                sink.flush()
    source.close()


def _raise_descriptor_limit(nodes):
    """Raises the soft limit on open files towards the hard one when the ranks'
    pipes (two per rank, kept open while they run) need it, as ``herald run``
    does."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * nodes + 64
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _free_port():
    """A loopback port free now, for rank 0 to listen on once it starts: below
    the kernel's ephemeral range when there is room (as ``herald run`` picks
    it), since a port from that range (what binding port 0 gives) may be handed
    to any outgoing connection before rank 0 binds it."""
    below = _ephemeral_low()
    if below > _FIRST_UNPRIVILEGED:
        span = below - _FIRST_UNPRIVILEGED
        start = secrets.randbelow(span)
        for step in range(min(span, _PROBES)):
            port = _FIRST_UNPRIVILEGED + (start + step) % span
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Ports from here up need no privilege; how many are tried below the ephemeral
# range before settling for one in it.
_FIRST_UNPRIVILEGED = 1024
_PROBES = 64


def _ephemeral_low():
    """The first port of the kernel's ephemeral range, or 0 if unknown."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
