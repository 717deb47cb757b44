"""Network topologies for scenarios: a networkx generator, or a GML file in Shadow's format.

Shadow's GML: nodes may carry ``host_bandwidth_up`` / ``host_bandwidth_down`` (``"10 Mbit"``), edges
carry ``latency`` (``"50 ms"``) and optionally ``packet_loss`` (a share). Hosts attach to graph nodes;
the latency between two hosts is that of the shortest path between their nodes, the loss that of the
same path (1 - the product of each edge's delivery share).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import networkx as nx

from simulator.scenario.schema import Topology
from simulator.scenario.units import parse_bandwidth, parse_duration


class TopologyError(ValueError):
    pass


def load_graph(topology: Topology, base_dir: Path) -> nx.Graph:
    """The graph, each edge with ``latency_s`` and ``loss``, each node with optional ``up``/``down``."""
    if topology.gml is not None:
        path = base_dir / topology.gml
        try:
            graph = nx.read_gml(path, label="id")
        except OSError as exc:
            raise TopologyError(f"cannot read {path}: {exc.strerror or exc}") from None
        except nx.NetworkXError as exc:
            raise TopologyError(f"{path} is not valid GML: {exc}") from None
    else:
        name = topology.generator or ""
        generator = getattr(nx, name, None) if not name.startswith("_") else None
        if not callable(generator) or not name.endswith(("_graph", "_tree")):
            raise TopologyError(f"no networkx generator {name!r} (e.g. barabasi_albert_graph, grid_2d_graph)")
        try:
            graph = generator(**topology.params)
        except Exception as exc:  # a generator's own complaint about its parameters
            raise TopologyError(f"{name}({_params(topology.params)}) failed: {exc}") from None
        graph = (
            nx.convert_node_labels_to_integers(graph) if not isinstance(next(iter(graph), 0), int) else graph
        )
    if graph.number_of_nodes() == 0:
        raise TopologyError("the topology has no nodes")
    if graph.is_directed():
        graph = graph.to_undirected()
    default = topology.edge_latency.mean if topology.edge_latency is not None else None
    for a, b, data in graph.edges(data=True):
        try:
            latency = data.get("latency")
            data["latency_s"] = parse_duration(latency) if latency is not None else default
            data["loss"] = float(data.get("packet_loss", 0.0))
        except (TypeError, ValueError) as exc:
            raise TopologyError(f"edge {a}-{b}: {exc}") from None
        if data["latency_s"] is None:
            raise TopologyError(f"edge {a}-{b} has no latency and the topology gives no edge_latency")
        if not 0.0 <= data["loss"] <= 1.0:
            raise TopologyError(f"edge {a}-{b}: packet_loss must be within [0, 1]")
    for node, data in graph.nodes(data=True):
        try:
            for key, field in (("host_bandwidth_up", "up"), ("host_bandwidth_down", "down")):
                if key in data:
                    data[field] = parse_bandwidth(data[key])
        except ValueError as exc:
            raise TopologyError(f"node {node}: {exc}") from None
    if not nx.is_connected(graph):
        raise TopologyError("the topology is not connected: some hosts could never reach each other")
    return graph


def path_profiles(graph: nx.Graph, nodes: list[Any]) -> dict[tuple[Any, Any], tuple[float, float]]:
    """(latency in s, loss) of the shortest path between each pair of ``nodes`` (both orders, and a
    node to itself: its self-loop's latency if it has one, else 0)."""
    profiles: dict[tuple[Any, Any], tuple[float, float]] = {}
    wanted = set(nodes)
    for source in wanted:
        lengths, paths = nx.single_source_dijkstra(graph, source, weight="latency_s")
        for target in wanted:
            path = paths[target]
            delivered = math.prod(1.0 - graph.edges[u, v]["loss"] for u, v in itertools.pairwise(path))
            latency = lengths[target]
            if source == target and graph.has_edge(source, source):
                latency = graph.edges[source, source]["latency_s"]
            profiles[(source, target)] = (latency, 1.0 - delivered)
    return profiles


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


__all__ = ["TopologyError", "load_graph", "path_profiles"]
