"""mpi4py and herald in one stock python3 under mpirun: `python coexist.py
mpi-first` imports mpi4py.MPI before herald, `herald-first` after. Both find the
same rank and size, and each works: an MPI allreduce, then a herald launch to
the next rank; at exit herald ends its job before mpi4py finalizes MPI. Run by python/run-tests.sh."""

import sys

order = sys.argv[1]
if order == "mpi-first":
    from mpi4py import MPI

    import herald
elif order == "herald-first":
    import herald
    from mpi4py import MPI
else:
    raise SystemExit(f"usage: coexist.py mpi-first|herald-first, not {order!r}")

comm = MPI.COMM_WORLD
me, n = herald.node_id(), herald.num_nodes()
assert (comm.Get_rank(), comm.Get_size()) == (me, n), (comm.Get_rank(), comm.Get_size(), me, n)
# MPI first: mpi4py holds the GIL inside blocking MPI calls, so a rank waiting in
# a collective cannot run the herald tasks other ranks send it meanwhile.
assert comm.allreduce(me) == n * (n - 1) // 2
assert herald.launch((me + 1) % n, herald.node_id).result() == (me + 1) % n
print(f"coexist {order}: rank {me} of {n} ok")
