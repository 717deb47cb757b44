"""Reading a scenario file: YAML, overrides (``--profile``, ``--set``), typed decoding, and the checks.

Everything wrong with a file ends in one ``ScenarioError`` that names the file, the field path
(``groups[2].churn.session.shape``) and the reason, before anything runs.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import yaml

from simulator.scenario.checks import check_scenario
from simulator.scenario.errors import ScenarioError
from simulator.scenario.schema import FIELD_PREFIX, DistributionSpec, Scenario, dec_hook

_AT = re.compile(r" - at `\$([^`]*)`")
_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[([^\]]+)\]")
_FIELD = re.compile(rf"^{FIELD_PREFIX}([A-Za-z_]\w*): ", re.DOTALL)
_KINDS = ", ".join(sorted(spec.__struct_config__.tag for spec in typing.get_args(DistributionSpec)))


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading ``1e15`` as a number as YAML 1.2 does (1.1 wants ``1.0e+15``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_scenario(
    file: str | Path,
    *,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base_dir: Path | None = None,
) -> Scenario:
    """The scenario in ``file``, with a profile's and then ``overrides``' values (``path=value``)
    applied, decoded and checked (relative paths in it from ``base_dir``, the file's folder unless
    given). ``ScenarioError`` for anything wrong."""
    file = Path(file)
    name = str(file)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScenarioError(name, "", f"cannot read it: {exc.strerror or exc}") from None
    raw = parse_yaml(text, name)
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, dict) or profile not in profiles:
            known = ", ".join(map(str, profiles)) if isinstance(profiles, dict) and profiles else "none"
            raise ScenarioError(name, "profiles", f"no profile {profile!r} (the file has: {known})")
        chosen = profiles[profile]
        if not isinstance(chosen, dict):
            raise ScenarioError(name, f"profiles.{profile}", "a profile maps paths to values")
        for path, value in chosen.items():
            apply_override(raw, str(path), value, name, origin=f"profiles.{profile}")
    for item in overrides:
        path, sep, text_value = item.partition("=")
        if not sep or not path.strip():
            raise ScenarioError(name, "--set", f"expected PATH=VALUE, got {item!r}")
        try:
            value = yaml.load(text_value, Loader=_Loader) if text_value.strip() else ""
        except yaml.YAMLError:
            value = text_value
        apply_override(raw, path.strip(), value, name, origin="--set")
    scenario = decode(raw, name)
    check_scenario(scenario, name, base_dir=base_dir or file.parent)
    if not scenario.name:
        scenario.name = file.stem
    return scenario


def parse_yaml(text: str, name: str) -> dict[str, Any]:
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(name, where, f"not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(name, "", "a scenario is a mapping (seed, duration, network, groups, ...)")
    return raw


def decode(raw: dict[str, Any], name: str) -> Scenario:
    try:
        return msgspec.convert(raw, Scenario, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        path, reason = split_validation_error(str(exc))
        raise ScenarioError(name, path, reason) from None


def split_validation_error(message: str) -> tuple[str, str]:
    """msgspec's ``"reason - at `$.a[1].b`"`` (nested: several ``at``s, innermost first) as a field path
    and a reason in plain words."""
    parts = _AT.findall(message)
    reason = _AT.sub("", message).strip()
    path = "".join(reversed(parts)).lstrip(".")
    field = _FIELD.match(reason)
    if field is not None:  # a check on one field (``schema._field``): the field goes on the path
        return f"{path}.{field.group(1)}".lstrip("."), reason[field.end() :]
    reason = _plain(reason)
    if reason.startswith("unknown key "):
        keys = _keys_at(path)
        path = f"{path}.{reason.removeprefix('unknown key ')}".lstrip(".")
        if keys:
            reason += f" (keys here: {', '.join(keys)})"
    elif path.endswith("kind") and reason.startswith("invalid value "):  # a distribution's tag
        reason = f"unknown distribution kind {reason.removeprefix('invalid value ')} (kinds: {_KINDS})"
    elif reason.startswith(("invalid value ", "invalid enum value ")):
        values = _choices_at(path)
        if values:
            reason += f" (one of: {', '.join(values)})"
    return path, reason


def _type_at(path: str) -> Any:
    """The type (``msgspec.inspect``) that ``Scenario`` has at ``path``, or None if it is unclear."""
    info: Any = msgspec.inspect.type_info(Scenario)
    for name, _index in _STEP.findall(path):
        info = _descend(info, name or None)
        if info is None:
            return None
    return info


def _descend(info: Any, name: str | None) -> Any:
    """One step down: a field by ``name``, or (``None``) a list's item or a mapping's value."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.Metadata):
        info = info.type
    if isinstance(info, inspect.UnionType):  # the one struct of the union that has the field
        found = [_descend(member, name) for member in info.types]
        found = [member for member in found if member is not None]
        return found[0] if len(found) == 1 else None
    if name is None:
        if isinstance(info, inspect.ListType):
            return info.item_type
        if isinstance(info, inspect.DictType):
            return info.value_type
        return None
    if isinstance(info, inspect.StructType):
        return next((field.type for field in info.fields if field.encode_name == name), None)
    if isinstance(info, inspect.DictType):
        return info.value_type
    return None


def _keys_at(path: str) -> list[str]:
    info = _type_at(path)
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        info = structs[0] if len(structs) == 1 else None
    if isinstance(info, msgspec.inspect.StructType):
        return [field.encode_name for field in info.fields]
    return []


def _choices_at(path: str) -> list[str]:
    info = _type_at(path)
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(value) for value in info.values]
    return []


def _plain(reason: str) -> str:
    reason = reason.replace("`", "")
    if reason.startswith("Object contains unknown field "):
        return f"unknown key {reason.removeprefix('Object contains unknown field ')}"
    if reason.startswith("Object missing required field "):
        return f"missing required key {reason.removeprefix('Object missing required field ')}"
    if reason.startswith("Invalid value "):
        return f"invalid value {reason.removeprefix('Invalid value ')}"
    return reason[:1].lower() + reason[1:]


def apply_override(raw: dict[str, Any], path: str, value: Any, name: str, *, origin: str) -> None:
    """Set ``path`` (``groups[1].count``, ``groups[servers].count``: a group by name) in the raw
    document; mappings on the way are created, list items must exist."""
    steps = _steps(path, name, origin)
    node: Any = raw
    for i, (step, end) in enumerate(steps):
        last = i == len(steps) - 1
        where = path[:end].strip()
        if isinstance(step, int | str) and isinstance(node, list):
            index = _list_index(node, step, name, origin, where)
            if last:
                node[index] = copy.deepcopy(value)
            else:
                node = node[index]
            continue
        if not isinstance(node, dict) or not isinstance(step, str):
            above = path[: steps[i - 1][1]].strip() if i else "the top"
            what = "a mapping, not a list" if isinstance(node, dict) else "not a mapping"
            raise ScenarioError(name, f"{origin} {where}", f"{above} is {what}")
        if last:
            node[step] = copy.deepcopy(value)
        else:
            if step not in node or node[step] is None:
                node[step] = {}
            node = node[step]


def _steps(path: str, name: str, origin: str) -> list[tuple[int | str, int]]:
    """Each step of ``path`` (a key, a list index or an item's name) and where in ``path`` it ends."""
    steps: list[tuple[int | str, int]] = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None or match.end() == position:
            raise ScenarioError(name, f"{origin} {path}", "not a field path like groups[1].count")
        key, index = match.groups()
        position = match.end()
        if key is not None:
            steps.append((key, position))
        else:
            steps.append((int(index) if index.strip().lstrip("-").isdigit() else index.strip(), position))
    return steps


def _list_index(items: list[Any], step: int | str, name: str, origin: str, where: str) -> int:
    if isinstance(step, int):
        if not -len(items) <= step < len(items):
            raise ScenarioError(name, f"{origin} {where}", f"there are only {len(items)} items")
        return step
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == step:
            return index
    raise ScenarioError(name, f"{origin} {where}", f"no item named {step!r}")


__all__ = ["ScenarioError", "apply_override", "load_scenario", "split_validation_error"]
