"""Time to make a freshly written module importable on every worker: herald's
``import_global`` against Dask distributed, with the same number of processes.

Three measurements per N, each over fresh module names (so every import is real:
find, read, compile, execute):

* herald:      ``herald.import_global(name)`` on a job of N herald-python ranks
               (returns once all N interpreters have the module);
* dask run:    ``client.run(import_fresh, name)`` on a ``LocalCluster`` of N worker
               processes, the modules on a shared file system;
* dask upload: ``client.register_plugin(UploadFile(path))``, which sends the file
               to every worker and imports it there.

Every timing includes writing the fresh module file, into a directory on tmpfs
(``/dev/shm``, or ``$IMPORT_BENCH_DIR``): on this VM's ext4 creating a file takes
0.3 ms, as long as the import itself, which would measure the disk, not the
import. The physical floor, measured in the same run on rank 0 of the herald job:

* write:       writing the module file (once per timing, as in every timing);
* import cpu:  ``time.process_time()`` around ``importlib.import_module`` of such a
               fresh module (already written) in one process, median of many: the
               CPU that each of the N processes must spend;
* herald round: a global registration of a trivial call (a fresh key each time):
               the protocol and executor with nothing to import;
* floor = write + import cpu x N / cores + herald round, cores =
               ``len(os.sched_getaffinity(0))``.

Targets: herald within 1.5x of the floor, and Dask's ``client.run`` at least 3x
herald's time, at every N. Where the time goes:

* around the timed herald rounds, every thread's CPU time and time spent runnable
  but waiting for a CPU (Linux schedstat), on every node;
* a breakdown pass, last (it installs a finder and an audit hook on every node):
  for each round, when each node started the import (a finder first on
  ``sys.meta_path``), started executing the module (audit event "exec", so after
  reading and compiling) and finished it, in the system-wide monotonic clock and
  in that thread's CPU time, and the CPU of each remote ``herald._remote.invoke``;
  for a no-op round, when the trivial call ran on each node.

``import_fresh`` is ``importlib.import_module(name)``, retried once after
``importlib.invalidate_caches()`` if the module is not found: what herald does on
each node (a path finder caches its directory's listing, and a file written
within the same timestamp tick as that listing is not in it).

Usage (python/bench/run-bench.sh runs it all):

    herald-python -n N import_bench.py herald OUT.json --iterations K
    python import_bench.py dask N OUT.json --iterations K     # with dask installed
    python import_bench.py report OUT.json...
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

# Rounds before the timed ones: a node's first imports cost several times the
# later ones (its interpreter warming up), for 10 rounds or so.
WARMUP = 10
MODULE_SOURCE = '''"""A module written for one timing."""
import math

TABLE = [math.sqrt(i) for i in range(64)]


def area(radius):
    return math.pi * radius * radius


class Shape:
    def __init__(self, sides):
        self.sides = sides

    def angles(self):
        return (self.sides - 2) * 180
'''
SUPPORT_SOURCE = '''import importlib


def import_fresh(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        importlib.invalidate_caches()
        importlib.import_module(name)
    return name
'''


PROBE_SOURCE = '''"""import_bench.py's clock on every node: when fresh modules are imported."""
import os
import sys
import time

RECORDS = {}
_installed = False


def _now():
    return (time.monotonic(), time.thread_time())


class _Start:
    """First on sys.meta_path: the start of a phase module's import (before any
    finder looks for it); finds nothing itself."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.startswith("phase_") and "import" not in RECORDS.get(name, {}):
            RECORDS.setdefault(name, {})["import"] = _now()
        return None


def _hook(event, args):
    # "exec" of a phase module's code comes after reading and compiling it.
    if event == "exec":
        path = getattr(args[0], "co_filename", "")
        name = os.path.basename(path)[:-3]
        if name.startswith("phase_") and "exec" not in RECORDS.get(name, {"exec": None}):
            RECORDS[name]["exec"] = _now()


def install():
    global _installed
    if not _installed:
        sys.meta_path.insert(0, _Start)
        sys.addaudithook(_hook)
        _wrap_invoke()
        _installed = True


def _wrap_invoke():
    # herald's executor calls herald._remote.invoke for this node's part of a
    # global registration (not on the node whose own thread does the import).
    try:
        from herald import _remote
    except ImportError:
        return
    invoke = _remote.invoke

    def timed_invoke(payload, args):
        name = payload[len(b"import:"):].decode() if payload.startswith(b"import:") else ""
        if name.startswith("phase_"):
            RECORDS.setdefault(name, {})["invoke"] = _now()
        try:
            return invoke(payload, args)
        finally:
            if name.startswith("phase_"):
                RECORDS[name]["invoked"] = _now()

    _remote.invoke = timed_invoke


def done(name):
    RECORDS.setdefault(name, {})["done"] = _now()


def stamp(key):
    RECORDS[key] = {"run": _now()}


def records():
    return RECORDS


def threads():
    """Each thread's name, nanoseconds on a CPU and nanoseconds runnable but
    waiting for one (Linux schedstat), by thread id."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as file:
                name = file.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as file:
                ran, waited = file.read().split()[:2]
        except OSError:
            continue
        found[tid] = (name, int(ran), int(waited))
    return found
'''
PHASE_TRAILER = '''
import bench_probe
bench_probe.done(__name__)
'''


def module_root():
    """Where the module directories go: tmpfs if there is one (see the module docs)."""
    chosen = os.environ.get("IMPORT_BENCH_DIR")
    if chosen:
        return chosen
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def write_module(directory, prefix="bench_", source=MODULE_SOURCE):
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    path = os.path.join(directory, f"{name}.py")
    with open(path, "w") as file:
        file.write(source)
    return name, path


def timed(iterations, one, warm=None):
    """Runs one() WARMUP + iterations times; the iterations' seconds. Writing the
    module file is part of each, for every system alike; removing it (one()
    returns its path, or None) is not. Removing keeps the directory small: a path
    finder lists the whole directory again for every fresh module, so a growing
    one would make later imports dearer than earlier ones. warm() is called
    after the warm-up rounds."""
    times = []
    for index in range(WARMUP + iterations):
        if index == WARMUP and warm is not None:
            warm()
        started = time.perf_counter()
        path = one()
        elapsed = time.perf_counter() - started
        remove(path)
        if index >= WARMUP:
            times.append(elapsed)
    return times


def remove(path):
    """Removes a module file written for one timing, and its bytecode if any."""
    if path is None:
        return
    import importlib.util

    for stale in (path, importlib.util.cache_from_source(path)):
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass


def import_fresh(name):
    """What herald does on each node (see the module docs)."""
    import importlib

    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        importlib.invalidate_caches()
        importlib.import_module(name)


def bench_herald(out, iterations):
    import operator
    import site

    import herald

    directory = tempfile.mkdtemp(prefix="herald-bench-", dir=module_root())
    herald.register_global(site.addsitedir, directory)
    nodes = herald.num_nodes()
    cores = len(os.sched_getaffinity(0))
    # The probe module (importing it changes nothing until its install()):
    # here for its per-thread CPU snapshots around the timed rounds.
    with open(os.path.join(directory, "bench_probe.py"), "w") as file:
        file.write(PROBE_SOURCE)
    import bench_probe

    def snapshot():
        futures = [herald.launch(node, bench_probe.threads) for node in range(nodes)]
        return [future.result() for future in futures]

    def one():
        name, path = write_module(directory)
        herald.import_global(name)
        return path

    before = []
    times = timed(iterations, one, lambda: before.extend(snapshot()))
    save(out, {"system": "herald", "nodes": nodes, "times": times,
               "threads": thread_deltas(before, snapshot()), "rounds": iterations})

    # The floor's two terms. A global round that imports nothing (a fresh
    # registration of a trivial call each time)...
    rounds = iter(range(1 << 30))

    def noop():
        herald.register_global(operator.add, next(rounds), 0)

    before = []
    round_times = timed(iterations, noop, lambda: before.extend(snapshot()))
    save(out, {"system": "herald round", "nodes": nodes, "times": round_times,
               "threads": thread_deltas(before, snapshot()), "rounds": iterations})

    # ...and the CPU of one import of such a module in this process (written
    # beforehand, in the same directory, so the finder's work is the same), and
    # the time to write it.
    cpu_times, write_times = [], []
    for index in range(WARMUP + 4 * iterations):
        started = time.perf_counter()
        name, path = write_module(directory)
        written = time.perf_counter() - started
        started = time.process_time()
        import_fresh(name)
        elapsed = time.process_time() - started
        remove(path)
        if index >= WARMUP:
            cpu_times.append(elapsed)
            write_times.append(written)
    save(out, {"system": "import cpu", "nodes": nodes, "cores": cores, "times": cpu_times})
    save(out, {"system": "write", "nodes": nodes, "times": write_times})

    save(out, breakdown(herald, directory, nodes, iterations))
    shutil.rmtree(directory, ignore_errors=True)


def breakdown(herald, directory, nodes, iterations):
    """Where the time of import_global (and of a no-op round) goes: per round, the
    call's start and return on rank 0 and each node's probe records."""
    import bench_probe

    herald.register_global(bench_probe.install)

    def process_cpu():
        futures = [herald.launch(node, bench_probe.threads) for node in range(nodes)]
        return [future.result() for future in futures]

    rounds = WARMUP + iterations
    calls = {}
    cpu = [process_cpu()]
    for index in range(rounds):
        name, path = write_module(directory, "phase_", MODULE_SOURCE + PHASE_TRAILER)
        started = time.monotonic()
        herald.import_global(name)
        returned = time.monotonic()
        remove(path)
        if index >= WARMUP:
            calls[name] = (started, returned)
    cpu.append(process_cpu())
    for index in range(rounds):
        key = f"round_{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        herald.register_global(bench_probe.stamp, key)
        if index >= WARMUP:
            calls[key] = (started, time.monotonic())
    cpu.append(process_cpu())
    futures = [herald.launch(node, bench_probe.records) for node in range(nodes)]
    return {"system": "phases", "nodes": nodes, "calls": calls, "rounds": rounds,
            "records": [future.result() for future in futures],
            "threads": {"import": thread_deltas(cpu[0], cpu[1]), "noop": thread_deltas(cpu[1], cpu[2])}}


def thread_deltas(before, after):
    """Seconds on a CPU and waiting for one, summed over the nodes by thread name
    (rank 0's threads apart: its caller thread does its import)."""
    totals = {}
    for node, (node_before, node_after) in enumerate(zip(before, after)):
        for tid, (name, ran, waited) in node_after.items():
            _, ran_before, waited_before = node_before.get(tid, (name, 0, 0))
            total = totals.setdefault(name if node else f"0:{name}", [0.0, 0.0])
            total[0] += (ran - ran_before) / 1e9
            total[1] += (waited - waited_before) / 1e9
    return totals


def bench_dask(nodes, out, iterations):
    import logging
    import site

    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import UploadFile

    directory = tempfile.mkdtemp(prefix="dask-bench-", dir=module_root())
    with open(os.path.join(directory, "bench_support.py"), "w") as file:
        file.write(SUPPORT_SOURCE)
    site.addsitedir(directory)
    import bench_support

    cluster = LocalCluster(
        n_workers=nodes,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        client.run(site.addsitedir, directory)

        def run_import():
            name, path = write_module(directory)
            results = client.run(bench_support.import_fresh, name)
            assert len(results) == nodes
            return path

        def upload():
            _, path = write_module(directory)
            client.register_plugin(UploadFile(path))
            return path

        run_times = timed(iterations, run_import)
        upload_times = timed(iterations, upload)
    shutil.rmtree(directory, ignore_errors=True)
    save(out, {"system": "dask run", "nodes": nodes, "times": run_times})
    save(out, {"system": "dask upload", "nodes": nodes, "times": upload_times})


def save(out, result):
    with open(out, "a") as file:
        file.write(json.dumps(result) + "\n")


def report(paths):
    medians, cores, phases, timed_threads = {}, {}, {}, {}
    for path in paths:
        with open(path) as file:
            for line in file:
                result = json.loads(line)
                key = (result["system"], result["nodes"])
                if result["system"] == "phases":
                    phases[result["nodes"]] = result
                    continue
                medians[key] = statistics.median(result["times"])
                if "cores" in result:
                    cores[result["nodes"]] = result["cores"]
                if "threads" in result:
                    timed_threads[key] = (result["threads"], result["rounds"])
    all_nodes = sorted({n for _, n in medians} | set(phases))

    print("median time until every one of N processes has imported a fresh module;")
    print("floor = write + import cpu x N / cores + herald round (no-op), all measured in this run")
    print(f"{'N':>3}  {'herald':>9}  {'dask run':>9}  {'dask upload':>11}  {'write':>7}  {'import cpu':>10}"
          f"  {'herald round':>12}  {'floor':>9}  {'herald/floor':>12}  {'run/herald':>10}"
          f"  {'upload/herald':>13}  targets (<=1.5x floor, >=3x run)")
    for nodes in all_nodes:
        ours = medians.get(("herald", nodes))
        run = medians.get(("dask run", nodes))
        upload = medians.get(("dask upload", nodes))
        noop = medians.get(("herald round", nodes))
        cpu = medians.get(("import cpu", nodes))
        write = medians.get(("write", nodes), 0.0)
        floor = None
        if cpu is not None and noop is not None and nodes in cores:
            floor = write + cpu * nodes / cores[nodes] + noop
        over_floor = ours / floor if ours and floor else None
        run_over = run / ours if ours and run else None
        upload_over = upload / ours if ours and upload else None
        verdict = []
        if over_floor is not None:
            verdict.append("floor met" if over_floor <= 1.5 else "floor MISSED")
        if run_over is not None:
            verdict.append("dask met" if run_over >= 3 else "dask MISSED")
        print(f"{nodes:>3}  {ms(ours):>9}  {ms(run):>9}  {ms(upload):>11}  {ms(write):>7}  {ms(cpu):>10}"
              f"  {ms(noop):>12}  {ms(floor):>9}  {times(over_floor):>12}  {times(run_over):>10}"
              f"  {times(upload_over):>13}  {', '.join(verdict) or '-'}")
    if phases:
        print()
        print_phases([phases[n] for n in sorted(phases)])
    if timed_threads or phases:
        print()
        print_threads(timed_threads, phases)


def print_phases(results):
    """Medians over the rounds of the breakdown pass (a finder and an audit hook
    installed on every node, so these rounds are a little slower than the timings
    above)."""
    print("where the time goes (breakdown pass; medians over rounds, times from the call on rank 0):")
    print(f"{'N':>3}  {'import_global':>13}  {'last start':>10}  {'node: find+compile':>18}"
          f"  {'body':>7}  {'import wall':>11}  {'import cpu':>10}  {'last done':>9}"
          f"  {'->return':>8}  {'CPU/round, N procs':>18}  {'(imports)':>9}")
    noop_lines, invoke_lines = [], []
    for result in results:
        calls, records = result["calls"], result["records"]
        rows = {k: [] for k in ("total", "start", "compile", "exec", "wall", "cpu", "done",
                                "ack", "noop", "ran", "noop_ack", "sum_cpu", "invoke_cpu",
                                "outside_cpu")}
        for key, (started, returned) in calls.items():
            per_node = [node.get(key) for node in records]
            if any(entry is None for entry in per_node):
                continue
            if key.startswith("round_"):
                ran = max(entry["run"][0] for entry in per_node)
                rows["noop"].append(returned - started)
                rows["ran"].append(ran - started)
                rows["noop_ack"].append(returned - ran)
                continue
            if any(not {"import", "exec", "done"} <= set(entry) for entry in per_node):
                continue
            done = max(entry["done"][0] for entry in per_node)
            rows["total"].append(returned - started)
            rows["start"].append(max(entry["import"][0] for entry in per_node) - started)
            rows["done"].append(done - started)
            rows["ack"].append(returned - done)
            rows["sum_cpu"].append(sum(entry["done"][1] - entry["import"][1] for entry in per_node))
            for entry in per_node:
                rows["compile"].append(entry["exec"][0] - entry["import"][0])
                rows["exec"].append(entry["done"][0] - entry["exec"][0])
                rows["wall"].append(entry["done"][0] - entry["import"][0])
                rows["cpu"].append(entry["done"][1] - entry["import"][1])
                if {"invoke", "invoked"} <= set(entry):
                    invoke_cpu = entry["invoked"][1] - entry["invoke"][1]
                    rows["invoke_cpu"].append(invoke_cpu)
                    rows["outside_cpu"].append(invoke_cpu - (entry["done"][1] - entry["import"][1]))
        med = {k: (statistics.median(v) if v else None) for k, v in rows.items()}
        by_thread = result.get("threads", {})
        rounds = result.get("rounds", 1)
        import_cpu = sum(ran for ran, _ in by_thread.get("import", {}).values()) / rounds
        noop_cpu = sum(ran for ran, _ in by_thread.get("noop", {}).values()) / rounds
        invoke_lines.append(
            f"{result['nodes']:>3}  {ms(med['invoke_cpu']):>22}  {ms(med['outside_cpu']):>18}")
        print(f"{result['nodes']:>3}  {ms(med['total']):>13}  {ms(med['start']):>10}"
              f"  {ms(med['compile']):>18}  {ms(med['exec']):>7}  {ms(med['wall']):>11}"
              f"  {ms(med['cpu']):>10}  {ms(med['done']):>9}  {ms(med['ack']):>8}"
              f"  {ms(import_cpu):>18}  {ms(med['sum_cpu']):>9}")
        noop_lines.append(f"{result['nodes']:>3}  {ms(med['noop']):>10}  {ms(med['ran']):>8}"
                          f"  {ms(med['noop_ack']):>8}  {ms(noop_cpu):>18}")
    print(f"{'N':>3}  {'noop round':>10}  {'last ran':>8}  {'->return':>8}  {'CPU/round, N procs':>18}")
    for line in noop_lines:
        print(line)
    print(f"{'N':>3}  {'remote invocation cpu':>22}  {'of which not import':>18}")
    for line in invoke_lines:
        print(line)
    print("last start: until the last node began the import; import wall/cpu: per node, from the")
    print("import's start to the end of the module's body (cpu: that thread's); last done: until the")
    print("last node finished; ->return: from then until the call returned on rank 0; CPU/round:")
    print("all N processes' CPU (every thread) per round, (imports): the import threads' share;")
    print("last ran: until the no-op ran on the last node; remote invocation cpu: per node other")
    print("than 0, herald._remote.invoke's thread CPU, and how much of it is outside the import")


THREAD_GROUPS = (
    ("rank 0 main", lambda name: name == "0:herald-python"),
    ("other mains", lambda name: name.split(":")[-1] == "herald-python"),
    ("workers", lambda name: name.split(":")[-1].startswith("herald-worker")),
    ("event loops", lambda name: name.split(":")[-1].startswith("herald-event-lo")),
    ("I/O threads", lambda name: name.split(":")[-1].startswith("herald-io")),
    ("other", lambda name: True),
)


def print_threads(timed_threads, phases):
    """CPU per round of all N processes, by kind of thread: the timed rounds (no
    probe) and the breakdown pass."""
    print("CPU per round, all N processes, by thread (CPU / runnable but waiting for a CPU):")
    print(f"{'N':>3}  {'rounds':<16}  {'total':>8}" + "".join(f"  {name:>19}" for name, _ in THREAD_GROUPS))
    rows = []
    for (system, nodes), (threads, rounds) in timed_threads.items():
        label = "import_global" if system == "herald" else "no-op round"
        rows.append((nodes, label, threads, rounds))
    for nodes, result in phases.items() if isinstance(phases, dict) else []:
        for kind, label in (("import", "probed import"), ("noop", "probed no-op")):
            if kind in result.get("threads", {}):
                rows.append((nodes, label, result["threads"][kind], result["rounds"]))
    for nodes, label, threads, rounds in sorted(rows, key=lambda row: (row[0], row[1])):
        sums = {name: [0.0, 0.0] for name, _ in THREAD_GROUPS}
        for thread, (ran, waited) in threads.items():
            group = next(name for name, test in THREAD_GROUPS if test(thread))
            sums[group][0] += ran / rounds
            sums[group][1] += waited / rounds
        total = sum(ran for ran, _ in sums.values())
        cells = "".join(f"  {ms(ran):>8} / {ms(waited):>8}" for ran, waited in sums.values())
        print(f"{nodes:>3}  {label:<16}  {ms(total):>8}{cells}")


def ms(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds is not None else "-"


def times(ratio):
    return f"{ratio:.2f}x" if ratio is not None else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ours = commands.add_parser("herald")
    ours.add_argument("out")
    ours.add_argument("--iterations", type=int, default=50)
    theirs = commands.add_parser("dask")
    theirs.add_argument("nodes", type=int)
    theirs.add_argument("out")
    theirs.add_argument("--iterations", type=int, default=30)
    summary = commands.add_parser("report")
    summary.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.command == "herald":
        bench_herald(args.out, args.iterations)
    elif args.command == "dask":
        bench_dask(args.nodes, args.out, args.iterations)
    else:
        report(args.paths)


if __name__ == "__main__":
    sys.exit(main())
