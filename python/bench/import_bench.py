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

Every timing includes writing the fresh module file. For reference, two more
herald columns: "herald round", a global registration of a trivial call (the
protocol and executor without an import), and "one import", writing and
importing such a module in one process (the CPU each of the N processes spends).

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
import statistics
import sys
import tempfile
import time
import uuid

WARMUP = 3
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


def write_module(directory):
    name = f"bench_{uuid.uuid4().hex[:12]}"
    path = os.path.join(directory, f"{name}.py")
    with open(path, "w") as file:
        file.write(MODULE_SOURCE)
    return name, path


def timed(iterations, one):
    """Runs one() WARMUP + iterations times; the iterations' seconds. Writing the
    module file is part of each, for every system alike."""
    times = []
    for index in range(WARMUP + iterations):
        started = time.perf_counter()
        one()
        elapsed = time.perf_counter() - started
        if index >= WARMUP:
            times.append(elapsed)
    return times


def bench_herald(out, iterations):
    import importlib
    import operator
    import site

    import herald

    directory = tempfile.mkdtemp(prefix="herald-bench-")
    herald.register_global(site.addsitedir, directory)
    nodes = herald.num_nodes()

    def one():
        name, _ = write_module(directory)
        herald.import_global(name)

    save(out, {"system": "herald", "nodes": nodes, "times": timed(iterations, one)})

    # For reference: a global round that imports nothing (a fresh registration of
    # a trivial call), and one import of such a module in one process.
    rounds = iter(range(1 << 30))
    round_times = timed(iterations, lambda: herald.register_global(operator.add, next(rounds), 0))
    save(out, {"system": "herald round", "nodes": nodes, "times": round_times})

    def local():
        name, _ = write_module(directory)
        importlib.import_module(name)

    save(out, {"system": "one import", "nodes": nodes, "times": timed(iterations, local)})


def bench_dask(nodes, out, iterations):
    import logging
    import site

    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import UploadFile

    directory = tempfile.mkdtemp(prefix="dask-bench-")
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
            name, _ = write_module(directory)
            results = client.run(bench_support.import_fresh, name)
            assert len(results) == nodes

        def upload():
            _, path = write_module(directory)
            client.register_plugin(UploadFile(path))

        run_times = timed(iterations, run_import)
        upload_times = timed(iterations, upload)
    save(out, {"system": "dask run", "nodes": nodes, "times": run_times})
    save(out, {"system": "dask upload", "nodes": nodes, "times": upload_times})


def save(out, result):
    with open(out, "a") as file:
        file.write(json.dumps(result) + "\n")


def report(paths):
    medians = {}
    for path in paths:
        with open(path) as file:
            for line in file:
                result = json.loads(line)
                medians[(result["system"], result["nodes"])] = statistics.median(result["times"])
    print(f"{'N':>3}  {'herald':>10}  {'dask run':>10}  {'dask upload':>11}"
          f"  {'herald/run':>12}  {'herald/upload':>13}  {'herald round':>12}  {'one import':>10}")
    for nodes in sorted({n for _, n in medians}):
        ours = medians.get(("herald", nodes))
        run = medians.get(("dask run", nodes))
        upload = medians.get(("dask upload", nodes))
        round_trip = medians.get(("herald round", nodes))
        one_import = medians.get(("one import", nodes))

        def ms(seconds):
            return f"{seconds * 1e3:.2f} ms" if seconds is not None else "-"

        def ratio(theirs):
            if ours is None or theirs is None:
                return "-"
            return f"{ours / theirs:.3f} ({theirs / ours:.1f}x)"

        print(f"{nodes:>3}  {ms(ours):>10}  {ms(run):>10}  {ms(upload):>11}"
              f"  {ratio(run):>12}  {ratio(upload):>13}  {ms(round_trip):>12}  {ms(one_import):>10}")


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
