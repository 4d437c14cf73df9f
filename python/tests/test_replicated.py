"""Replicated callers: every rank asks for the same import at the same time, as
the ranks of a replicated (SPMD) script do. The key is the module's name, the
same on every rank, so the job imports once per node and the messages stay
O(N): 2(N-1) for the dissemination and at most 2 per requester that is not the
key's home node, never a broadcast per requester (N * 2(N-1))."""

import herald
import hp_probe
from hp_suite import on_every_node


def messages_sent_by_all_nodes():
    """Sum of every node's counter, each read on its node. The reads of the
    other nodes happen in tasks; this node's last, after their results are in,
    so that two such sums bracket the same messages every time."""
    others = [herald.launch(node, hp_probe.stats) for node in range(1, herald.num_nodes())]
    total = sum(future.result()["messages_sent"] for future in others)
    return total + herald.stats()["messages_sent"]


def messages_of(fn, argument):
    """Messages sent by all nodes while every node runs fn(argument) at once."""
    before = messages_sent_by_all_nodes()
    # Both functions return their argument: every node ran it, and finished.
    assert on_every_node(fn, argument) == [argument] * herald.num_nodes()
    return messages_sent_by_all_nodes() - before


def test_replicated_import_global_costs_linear_messages(nodes, new_module_name, write_module):
    n = len(nodes)
    name = write_module(new_module_name("replicated"))
    # The same launches and collections without a registration: their messages
    # are subtracted, leaving the registration's own.
    baseline = messages_of(hp_probe.replicated_noop, name)
    with_imports = messages_of(hp_probe.replicated_import, name)
    registration = with_imports - baseline
    print(f"replicated import_global by {n} ranks: {registration} messages")
    assert 2 * (n - 1) <= registration <= 2 * (n - 1) + 2 * n
    assert on_every_node(hp_probe.import_count, name) == [1] * n


def test_replicated_register_global_runs_once_per_node(nodes, new_module_name):
    token = new_module_name("replicated")
    on_every_node(hp_probe.replicated_register, token)
    assert on_every_node(hp_probe.times_recorded, token) == [1] * len(nodes)
