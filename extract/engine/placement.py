"""Where the inference actors go on a cluster (pure arithmetic on the nodes' resources; no Ray here).

Multi-node details: docs/cluster.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster: Ray node id and its CPU / GPU resources."""

    node_id: str
    cpus: int
    gpus: int = 0


@dataclass(frozen=True)
class ActorPlacement:
    """One inference actor: the node it is placed on (soft: a restart may go elsewhere) and what it holds."""

    node_id: str
    num_cpus: float
    num_gpus: int
    threads: int | None


def plan_actors(
    nodes: Sequence[NodeInfo], *, gpu: bool, workers: int | None = None, threads: int | None = None
) -> list[ActorPlacement]:
    """Where the inference actors go.

    GPU: one actor per GPU of every node (at most ``workers``), each holding that GPU and one CPU when
    its node has a CPU left over for decoding. CPU: one actor per node (or ``workers`` actors spread round
    robin over the nodes, biggest first); the actors of a node share its CPUs minus the quarter (at least
    one) kept for decode tasks, and run ``threads`` torch threads (default: the node's CPUs / actors).
    """
    if gpu:
        out = []
        for node in nodes:
            cpus = 1 if node.cpus > node.gpus else 0
            out += [ActorPlacement(node.node_id, cpus, 1, threads) for _ in range(node.gpus)]
        return out[:workers] if workers else out
    usable = sorted((n for n in nodes if n.cpus >= 1), key=lambda n: -n.cpus)
    count = workers or len(usable)
    per_node = {n.node_id: 0 for n in usable}
    for i in range(count):
        per_node[usable[i % len(usable)].node_id] += 1
    out = []
    for node in usable:
        k = per_node[node.node_id]
        if not k:
            continue
        # at least one CPU of the node stays free for decode tasks: on 1 CPU an actor reserves none
        # (an actor holding the only CPU would leave every decode task waiting forever)
        reserve = (node.cpus - max(1, node.cpus // 4)) / k
        out += [ActorPlacement(node.node_id, reserve, 0, threads or max(1, node.cpus // k)) for _ in range(k)]
    return out
