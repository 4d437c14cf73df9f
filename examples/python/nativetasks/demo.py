"""The Legion issue #748 scenario, end to end: rank 0 imports a Python package
that loads a native library with ctypes, then runs the library's native tasks on
every node. The program makes no herald call to spread the library: the import
is a plain `import nativetasks`.

    herald-python -n 4 demo.py
    herald run -n 4 -- python3 demo.py     (a stock python3 with the herald wheel)

With the library built with -DNATIVETASKS_LOCAL_ONLY (it registers its tasks on
the loading node only, as with a runtime that has only local registration), the
launches to every other node fail with herald's unregistered-task error, and
the demo exits with status 1. See run-demo.sh for both.
"""

import herald

if herald.node_id() != 0:
    # A stock python3 runs this script on every rank: the others serve rank 0,
    # as herald-python's do, so that only rank 0 imports the package.
    herald.serve()

import nativetasks  # noqa: E402 - the library's constructor registers its tasks on every node

nodes = range(herald.num_nodes())
squares = [nativetasks.square(node, node + 2) for node in nodes]
where = [nativetasks.where(node) for node in nodes]

failed = 0
print(f"{'node':>4}  {'nativetasks.square':<20}  {'nativetasks.where':<18}")
for node in nodes:
    try:
        square = f"{node + 2}^2 = {squares[node].result()}"
        print(f"{node:>4}  {square:<20}  ran on node {where[node].result()}")
    except herald.TaskError as error:
        failed += 1
        print(f"{node:>4}  FAILED: {error}")
if failed:
    print(f"native tasks failed on {failed} of {len(nodes)} node(s)")
    raise SystemExit(1)
print(f"native tasks ran on all {len(nodes)} node(s)")
