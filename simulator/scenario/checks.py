"""Checks across a scenario's sections: what the types alone cannot say (names that must exist,
grids that must hold the experts served, a warm-up inside the run). Each failure is a ``ScenarioError``
with the field path of the setting at fault."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from simulator.scenario.devices import PRESETS
from simulator.scenario.errors import ScenarioError
from simulator.scenario.schema import Group, Scenario
from simulator.scenario.units import parse_duration
from tesseract.expert_uid import parse_uid
from tesseract.server.options import expand_experts


def dataset_spec(dataset: str, base_dir: Path) -> str:
    """A trainer's data set as ``load_dataset`` takes it: an MNIST directory relative to the file."""
    if dataset.startswith("mnist:"):
        return f"mnist:{base_dir / dataset.partition(':')[2]}"
    return dataset


def dht_bootstrap_group(scenario: Scenario) -> Group | None:
    """The group whose first member starts the DHT (everyone else joins through someone): the first
    with members that runs a DHT node and accepts inbound connections."""
    return next(
        (g for g in scenario.groups if g.role in ("dht", "server") and g.inbound and g.count > 0), None
    )


def _check_phases(scenario: Scenario, fail: Callable[[str, str], None]) -> None:
    """``start.after`` names a trainer group that ends (it has ``steps`` and no churn), the group the
    DHT starts from waits for nobody, and no groups wait in a loop; ``end_when_trained`` needs
    trainers, each group of them one that ends. (A member counts as done once it has taken its steps
    or is down; one that a fault brings back later does not reopen its phase.)"""
    by_name = {group.name: group for group in scenario.groups}

    def never_ends(group: Group) -> str | None:
        if group.trainer is None or group.trainer.steps is None:
            return "only a trainer group with steps does"
        if group.churn is not None:
            return "its members come and go"
        return None

    for index, group in enumerate(scenario.groups):
        after, path = group.start.after, f"groups[{index}].start.after"
        if after is None:
            continue
        other = by_name.get(after)
        if other is None:
            fail(path, f"no group {after!r} (groups: {_names(by_name)})")
        assert other is not None
        if (reason := never_ends(other)) is not None:
            fail(path, f"group {after!r} never finishes: {reason}")
        chain = [group.name]
        while other is not None and other.start.after is not None:
            if other.name in chain:
                fail(path, f"groups wait for each other in a loop ({' -> '.join([*chain, other.name])})")
            chain.append(other.name)
            other = by_name.get(other.start.after)
    first = dht_bootstrap_group(scenario)
    if first is not None and first.start.after is not None:
        where = f"groups[{scenario.groups.index(first)}].start.after"
        fail(where, "the DHT starts from this group's first member: it cannot wait for trainers")
    if scenario.end_when_trained:
        trainers = [g for g in scenario.groups if g.trainer is not None]
        for group in trainers:
            if (reason := never_ends(group)) is not None:
                fail("end_when_trained", f"trainer group {group.name!r} never finishes: {reason}")
        if not any(g.count for g in trainers):
            fail("end_when_trained", "the scenario has no trainers to wait for")


def check_scenario(scenario: Scenario, file: str, *, base_dir: Path) -> None:
    def fail(path: str, reason: str) -> None:
        raise ScenarioError(file, path, reason)

    if scenario.warmup >= scenario.duration:
        fail(
            "warmup", f"the warm-up ({scenario.warmup:g} s) must end before the run ({scenario.duration:g} s)"
        )
    if scenario.metrics.interval > scenario.duration:
        fail("metrics.interval", f"longer than the run ({scenario.duration:g} s)")
    network = scenario.network
    regions = set(network.regions)
    for name, region in network.regions.items():
        for other in region.latency:
            if other not in regions:
                fail(
                    f"network.regions.{name}.latency.{other}",
                    f"no region {other!r} (regions: {_names(regions)})",
                )
    for a in sorted(regions):
        for b in sorted(regions):
            if a < b and b not in network.regions[a].latency and a not in network.regions[b].latency:
                fail(
                    f"network.regions.{a}.latency",
                    f"no latency between {a!r} and {b!r} (give it on either side)",
                )
    if network.topology is not None:
        _check_topology(scenario, file, base_dir)

    names: set[str] = set()
    grids: dict[str, list[int]] = {}
    served: dict[str, list[tuple[str, str]]] = {}  # prefix -> (uid, group path)
    for index, group in enumerate(scenario.groups):
        path = f"groups[{index}]"
        if group.name in names:
            fail(f"{path}.name", f"two groups are named {group.name!r}")
        names.add(group.name)
        if group.region is not None and group.region not in regions:
            reason = f"no region {group.region!r}" + (
                f" (regions: {_names(regions)})" if regions else " (the network defines no regions)"
            )
            fail(f"{path}.region", reason)
        if group.node is not None and network.topology is None:
            fail(f"{path}.node", "the network has no topology to attach to")
        if isinstance(group.device, str) and group.device not in PRESETS:
            fail(f"{path}.device", f"no device preset {group.device!r} (presets: {_names(PRESETS)})")
        if group.start.at >= scenario.duration:
            fail(f"{path}.start.at", f"starts after the run ends ({scenario.duration:g} s)")
        churn = group.churn
        if churn is not None:
            if churn.min_alive > group.count:
                fail(f"{path}.churn.min_alive", f"more than the group's {group.count} members")
            if churn.trace is not None:
                _check_trace(base_dir / churn.trace, group.name, group.count, file, f"{path}.churn.trace")
        if group.server is not None:
            try:
                uids = expand_experts(group.server.experts)
            except ValueError as exc:
                fail(f"{path}.server.experts", str(exc))
            if not group.server.replicate and group.count > len(uids):
                fail(
                    f"{path}.count",
                    f"{group.count} servers for {len(uids)} experts (set replicate: true to copy them)",
                )
            for uid in uids:
                served.setdefault(parse_uid(uid)[0], []).append((uid, f"{path}.server.experts"))
        if group.trainer is not None:
            grids[group.trainer.uid_prefix] = group.trainer.grid
            if group.trainer.dataset.startswith("mnist:"):
                from tesseract.train.data import load_dataset  # torch: only for a data set on disk

                try:
                    load_dataset(dataset_spec(group.trainer.dataset, base_dir))
                except (ValueError, OSError) as exc:
                    fail(f"{path}.trainer.dataset", str(exc))
            if group.trainer.hidden_dim <= 0:
                fail(f"{path}.trainer.hidden_dim", "must be positive")
    _check_phases(scenario, fail)
    if dht_bootstrap_group(scenario) is None:
        fail(
            "groups",
            "no DHT node to bootstrap from: add a dht or server group that accepts inbound connections",
        )
    all_served = {uid for uids in served.values() for uid, _ in uids}
    for index, group in enumerate(scenario.groups):
        if group.trainer is None or group.trainer.model == "dense":  # all of it local
            continue
        if group.trainer.model == "sequential":
            where = f"groups[{index}].trainer.blocks"
            try:
                blocks = expand_experts(group.trainer.blocks or "")
            except ValueError as exc:
                fail(where, str(exc))
            missing = [uid for uid in blocks if uid not in all_served]
            if missing:
                more = " ..." if len(missing) > 3 else ""
                fail(where, f"no server group serves {_names(missing[:3])}{more}")
            prefix = parse_uid(blocks[0])[0]
        else:
            prefix, grid = group.trainer.uid_prefix, group.trainer.grid
        if prefix not in served:
            fail(f"groups[{index}].trainer.uid_prefix", f"no server group serves experts under {prefix!r}")
        for uid, where in served[prefix] if group.trainer.model == "mixture" else []:
            coords = parse_uid(uid)[1]
            if len(coords) != len(grid) or any(c >= size for c, size in zip(coords, grid, strict=True)):
                fail(
                    where,
                    f"expert {uid} lies outside the {'x'.join(map(str, grid))} grid of group {group.name!r}",
                )
        widths = {
            g.server.hidden_dim
            for g in scenario.groups
            if g.server is not None and g.server.experts.startswith(prefix)
        }
        if widths and widths != {group.trainer.hidden_dim}:
            fail(
                f"groups[{index}].trainer.hidden_dim",
                f"the servers' experts take hidden_dim {_names(widths)}",
            )
    group_names = names
    for index, fault in enumerate(scenario.faults):
        path = f"faults[{index}]"
        if fault.at >= scenario.duration:
            fail(f"{path}.at", f"after the run ends ({scenario.duration:g} s)")
        target = fault.target
        if target is not None:
            if target.group is not None and target.group not in group_names:
                fail(f"{path}.target.group", f"no group {target.group!r} (groups: {_names(group_names)})")
            if target.region is not None and target.region not in regions:
                fail(f"{path}.target.region", f"no region {target.region!r}")
            if target.count is not None and target.group is not None:
                size = next(g.count for g in scenario.groups if g.name == target.group)
                if target.count > size:
                    fail(f"{path}.target.count", f"the group {target.group!r} has only {size} members")
            if fault.kind == "fail_calls" and target.group is not None:
                role = next(g.role for g in scenario.groups if g.name == target.group)
                if role != "server":
                    fail(
                        f"{path}.target.group", f"fail_calls hits servers; {target.group!r} is a {role} group"
                    )
        for side_index, side in enumerate(fault.between or []):
            for item in side:
                if item not in group_names and item not in regions:
                    fail(f"{path}.between[{side_index}]", f"{item!r} is neither a group nor a region")


def _check_topology(scenario: Scenario, file: str, base_dir: Path) -> None:
    from simulator.scenario.topology import TopologyError, load_graph

    try:
        graph = load_graph(scenario.network.topology, base_dir)  # type: ignore[arg-type]
    except TopologyError as exc:
        raise ScenarioError(file, "network.topology", str(exc)) from None
    for index, group in enumerate(scenario.groups):
        if group.node is not None and group.node not in graph and str(group.node) not in graph:
            raise ScenarioError(file, f"groups[{index}].node", f"no node {group.node!r} in the topology")


def _check_trace(path: Path, group: str, count: int, file: str, where: str) -> None:
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except OSError as exc:
        raise ScenarioError(file, where, f"cannot read {path}: {exc.strerror or exc}") from None
    for number, row in enumerate(rows, start=1):
        if not row or row[0].strip().startswith("#") or (number == 1 and row[0].strip() == "node"):
            continue
        if len(row) != 3:
            raise ScenarioError(file, where, f"{path.name} line {number}: expected node, start, end")
        try:
            trace_member(row[0], group, count)
            start, end = parse_duration(row[1].strip()), parse_duration(row[2].strip())
        except ValueError as exc:
            raise ScenarioError(file, where, f"{path.name} line {number}: {exc}") from None
        if end <= start:
            raise ScenarioError(file, where, f"{path.name} line {number}: the session ends before it starts")


def trace_member(node: str, group: str, count: int) -> int:
    """A trace's node column: an index in the group (``3``) or a member's name (``volunteers-3``)."""
    text = node.strip()
    index_text = text.removeprefix(f"{group}-")
    if not index_text.isdigit():
        raise ValueError(f"unknown node {text!r}: use an index or {group}-INDEX")
    index = int(index_text)
    if index >= count:
        raise ValueError(f"unknown node {text!r}: the group {group!r} has {count} members")
    return index


def _names(items: object) -> str:
    return ", ".join(map(str, sorted(items))) or "none"  # type: ignore[call-overload]


__all__ = ["check_scenario", "dht_bootstrap_group", "trace_member"]
