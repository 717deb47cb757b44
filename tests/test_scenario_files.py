"""Scenario files: a gallery of broken ones (each names its file, field path and reason), a good one
with its defaults, units, overrides and profiles, the unit parser, and ``tesseract sim validate``.

Each file in ``tests/scenarios/bad/`` has one mistake and says what the loader must report on its first
line, ``# expect: PATH: REASON-FRAGMENT``; ``# profile: NAME`` and ``# set: PATH=VALUE`` lines after it
are passed to the loader as ``--profile`` and ``--set`` would be.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.scenario.errors import ScenarioError
from simulator.scenario.load import load_scenario
from simulator.scenario.schema import ALL_FAMILIES, FixedSpec, resolved
from simulator.scenario.units import format_duration, parse_bandwidth, parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
BAD = sorted((SCENARIOS / "bad").glob("*.yaml"))
GOOD = SCENARIOS / "good" / "minimal.yaml"


def _header(file: Path) -> tuple[str, str, str | None, list[str]]:
    """(path, reason fragment, profile, overrides) from a gallery file's leading comments."""
    lines = file.read_text().splitlines()
    first = lines[0]
    assert first.startswith("# expect: "), f"{file.name}: the first line must be '# expect: PATH: REASON'"
    path, sep, fragment = first.removeprefix("# expect: ").partition(": ")
    assert sep and fragment, f"{file.name}: expected '# expect: PATH: REASON', got {first!r}"
    profile, overrides = None, []
    for line in lines[1:]:
        if line.startswith("# profile: "):
            profile = line.removeprefix("# profile: ").strip()
        elif line.startswith("# set: "):
            overrides.append(line.removeprefix("# set: ").strip())
        else:
            break
    return path, fragment, profile, overrides


# --- the gallery of broken files ---------------------------------------------------------------


def test_the_gallery_is_large_enough() -> None:
    assert len(BAD) >= 20
    paths = {_header(file)[0] for file in BAD}
    assert len(paths) >= 20  # not the same mistake twice over


@pytest.mark.parametrize("file", BAD, ids=[file.stem for file in BAD])
def test_a_broken_file_names_its_path_and_reason(file: Path) -> None:
    path, fragment, profile, overrides = _header(file)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(file, profile=profile, overrides=overrides)
    err = caught.value
    assert err.path == path, f"{file.name}: {err}"
    assert fragment in err.reason, f"{file.name}: {err}"
    assert err.file == str(file)
    message = str(err)
    assert message.startswith(f"{file}: ")
    assert message == (f"{file}: {path}: {err.reason}" if path else f"{file}: {err.reason}")
    assert "\n" not in message  # one line for the user


def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read it"):
        load_scenario(tmp_path / "absent.yaml")


# --- a good file --------------------------------------------------------------------------------


def test_the_minimal_scenario_loads_with_its_defaults_and_units() -> None:
    scenario = load_scenario(GOOD)
    assert scenario.name == "minimal"
    assert scenario.duration == 60.0 and scenario.warmup == 10.0
    assert isinstance(scenario.network.latency.spec, FixedSpec)  # type: ignore[union-attr]
    assert scenario.network.latency.mean == pytest.approx(0.020)  # type: ignore[union-attr]
    assert scenario.network.bandwidth.up == pytest.approx(10e6 / 8)  # type: ignore[union-attr]
    assert scenario.network.bandwidth.down == pytest.approx(100e6 / 8)  # type: ignore[union-attr]
    data = resolved(scenario)
    dht, servers, trainers = data["groups"]
    assert [g["role"] for g in data["groups"]] == ["dht", "server", "trainer"]
    # Defaults the file leaves out are filled in.
    assert (dht["count"], dht["device"], dht["inbound"], dht["churn"]) == (1, "cpu", True, None)
    assert dht["start"] == {"at": 0.0, "ramp": 0.0, "after": None}
    assert servers["start"] == {"at": 1.0, "ramp": 2.0, "after": None}
    assert servers["server"]["experts"] == "ffn.[0:2].[0:2]"
    assert servers["server"]["expert_cls"] == "ffn" and servers["server"]["replicate"] is False
    assert servers["server"]["announce_period"] == 10.0
    assert trainers["trainer"]["grid"] == [2, 2]
    assert (trainers["trainer"]["uid_prefix"], trainers["trainer"]["k_min"]) == ("ffn", 1)
    assert trainers["trainer"]["forward_timeout"] == 2.0
    assert data["network"]["latency"] == {"kind": "fixed", "value": 0.02}
    assert data["network"]["jitter"] == 0.0 and data["faults"] == []
    assert data["metrics"]["interval"] == 5.0
    assert data["metrics"]["record"] == list(ALL_FAMILIES)
    assert data["tick"] == 0.001 and data["seed"] == 1


def test_overrides_by_index_and_by_group_name_agree() -> None:
    by_index = load_scenario(GOOD, overrides=["groups[1].count=4", "duration=2 min"])
    by_name = load_scenario(GOOD, overrides=["groups[servers].count=4", "duration=120"])
    assert by_index.groups[1].count == by_name.groups[1].count == 4
    assert by_index.duration == by_name.duration == 120.0
    assert resolved(by_index) == resolved(by_name)
    nested = load_scenario(GOOD, overrides=["groups[trainers].trainer.k_best=1", "network.latency=50 ms"])
    assert nested.groups[2].trainer.k_best == 1  # type: ignore[union-attr]
    assert nested.network.latency.mean == pytest.approx(0.05)  # type: ignore[union-attr]
    assert load_scenario(GOOD).groups[1].count == 2  # the file itself is untouched


def test_an_override_with_a_bad_value_is_reported_at_its_field() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(GOOD, overrides=["groups[servers].count=four"])
    assert (caught.value.path, caught.value.reason) == ("groups[1].count", "expected int, got str")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(GOOD, overrides=["groups[servers].count=5"])  # 5 servers, 4 experts
    assert caught.value.path == "groups[1].count"


@pytest.mark.parametrize(
    ("override", "path", "fragment"),
    [
        ("count", "--set", "expected PATH=VALUE"),
        ("groups[9].count=1", "--set groups[9]", "there are only 3 items"),
        ("groups[1.count=1", "--set groups[1.count", "not a field path"),
        ("duration.unit=s", "--set duration.unit", "duration is not a mapping"),
        ("network[0]=1", "--set network[0]", "network is a mapping, not a list"),
    ],
)
def test_a_bad_set_is_reported_with_its_path(override: str, path: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(GOOD, overrides=[override])
    assert caught.value.path == path and fragment in caught.value.reason


def test_a_groups_dht_settings_reach_its_nodes_and_trainers() -> None:
    from simulator.scenario.roles import dht_config  # loads torch

    scenario = load_scenario(
        GOOD,
        overrides=[
            "groups[dht].dht.refresh=1 h",
            "groups[dht].dht.k=10",
            "groups[dht].dht.replicas=4",
            "groups[trainers].dht.request_timeout=3 s",
        ],
    )
    dht, servers, trainers = scenario.groups
    config = dht_config(dht)
    assert (config.refresh_interval, config.k, config.num_replicas) == (3600.0, 10, 4)
    assert config.alpha == 3 and not config.client_mode  # unset: DHTConfig's defaults
    assert dht_config(servers) == dht_config(dht.__class__(name="x", role="dht"))
    trainer = dht_config(trainers, client_mode=True)
    assert trainer.client_mode and trainer.request_timeout == 3.0
    assert resolved(scenario)["groups"][0]["dht"]["refresh"] == 3600.0


def test_exponents_without_a_dot_are_numbers() -> None:
    """YAML 1.1 reads ``2e12`` as text; a scenario reads it as the number everyone means."""
    scenario = load_scenario(GOOD, overrides=["groups[servers].device={flops: 2e12}"])
    assert scenario.groups[1].device.flops == 2e12  # type: ignore[union-attr]


def test_a_profile_applies_and_set_comes_after_it() -> None:
    smoke = load_scenario(GOOD, profile="smoke")
    assert smoke.duration == 120.0  # "2 min"
    assert smoke.groups[1].count == 4
    assert smoke.metrics.interval == 1.0
    both = load_scenario(GOOD, profile="smoke", overrides=["duration=90 s"])
    assert both.duration == 90.0 and both.groups[1].count == 4


# --- units --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("50 ms", 0.05),
        ("50ms", 0.05),
        ("250 us", 250e-6),
        ("2 min", 120.0),
        ("1.5 h", 5400.0),
        ("2 hours", 7200.0),
        ("1 d", 86400.0),
        ("1e3 ns", 1e-6),
        ("0", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (512, 512),
        ("4 MiB", 4 * 1024**2),
        ("512 kB", 512_000),
        ("1 GB", 10**9),
        ("3 bytes", 3),
        ("1.5 KiB", 1536),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("10 Mbit", 10e6 / 8),
        ("10 Mbit/s", 10e6 / 8),
        ("10 Mbps", 10e6 / 8),
        ("1 Gbit", 1e9 / 8),
        ("512 kbit", 512e3 / 8),
        ("1 MiB", 1024**2),
        ("1 MiB/s", 1024**2),
        ("2 MB", 2e6),
        (1000, 1000.0),
    ],
)
def test_bandwidths_in_bits_and_bytes(text: object, bytes_per_s: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize(
    ("parse", "value", "fragment"),
    [
        (parse_duration, "5 parsecs", "unknown time unit 'parsecs'"),
        (parse_duration, "-3 s", "cannot be negative"),
        (parse_duration, -1, "cannot be negative"),
        (parse_duration, "soon", "expected a duration"),
        (parse_duration, True, "got a boolean"),
        (parse_duration, [1], "got list"),
        (parse_duration, math.inf, "finite"),
        (parse_duration, "nan s", "expected a duration"),
        (parse_size, "4 MiBs", "unknown size unit"),
        (parse_size, "-1 kB", "cannot be negative"),
        (parse_bandwidth, "10 Mbits", "unknown bandwidth unit"),
        (parse_bandwidth, "0 Mbit", "must be positive"),
        (parse_bandwidth, "10 ms", "unknown bandwidth unit"),
        (parse_bandwidth, None, "expected a bandwidth"),
    ],
)
def test_bad_quantities(parse: object, value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(value)  # type: ignore[operator]
    assert fragment in str(caught.value)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 42, 750, 7200)] == ["250 ms", "42 s", "12.5 min", "2 h"]


# --- the command --------------------------------------------------------------------------------


def _validate(file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tesseract", "sim", "validate", str(file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["unknown-churn-key", "fault-unknown-group"])
def test_validate_reports_a_broken_file_in_one_line(name: str) -> None:
    file = SCENARIOS / "bad" / f"{name}.yaml"
    path, fragment, _, _ = _header(file)
    done = _validate(file)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {file}: {path}: ")
    assert fragment in lines[0]


def test_validate_accepts_the_good_file() -> None:
    done = _validate(GOOD)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout.strip()  # a short summary


@pytest.mark.parametrize(
    ("options", "shares"),
    [
        ({}, [["ffn.0", "ffn.1", "ffn.2"], ["ffn.3", "ffn.4", "ffn.5"]]),
        ({"interleave": True}, [["ffn.0", "ffn.2", "ffn.4"], ["ffn.1", "ffn.3", "ffn.5"]]),
        ({"replicate": True}, [[f"ffn.{i}" for i in range(6)]] * 2),
    ],
)
def test_a_server_group_splits_its_experts_in_slices_round_robin_or_not_at_all(
    tmp_path: Path, options: dict, shares: list[list[str]]
) -> None:
    from simulator.scenario.members import Member
    from simulator.scenario.roles import experts_of

    file = tmp_path / "servers.yaml"
    server = {"experts": "ffn.[0:6]", **options}
    file.write_text(
        f"duration: 60 s\ngroups:\n  - {{name: servers, role: server, count: 2, server: {server}}}\n"
        "  - {name: trainers, role: trainer, trainer: {grid: [6]}}\n"
    )
    group = load_scenario(file).groups[0]
    found = [experts_of(Member(group=group, index=i, host=None, region=None)) for i in range(2)]  # type: ignore[arg-type]
    assert found == shares
