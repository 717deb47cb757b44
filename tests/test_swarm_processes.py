"""The main job: ``tesseract swarm --local`` trains on the digits over real processes on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def swarm(tmp_path: Path, *arguments: str) -> dict:
    out = tmp_path / "swarm.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tesseract",
            "swarm",
            "--local",
            "--log-every",
            "0",
            "--json",
            str(out),
            *arguments,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all processes stopped" in result.stdout
    return json.loads(out.read_text())


def test_a_local_swarm_learns_the_digits(tmp_path: Path) -> None:
    summary = swarm(tmp_path, "--epochs", "8")
    assert {"final_test_accuracy", "steps", "samples_per_s", "failed_calls"} <= summary.keys()
    assert summary["failed_calls"] == 0 and summary["samples_per_s"] > 0
    assert summary["final_test_accuracy"] >= 0.95, summary


def test_a_local_swarm_learns_with_a_tenth_of_expert_calls_failing(tmp_path: Path) -> None:
    summary = swarm(tmp_path, "--epochs", "8", "--fault-rate", "0.1")
    share = summary["failed_calls"] / summary["expert_calls"]
    assert 0.06 <= share <= 0.14, summary
    assert summary["final_test_accuracy"] >= 0.93, summary


def test_four_trainers_that_average_train_one_model(tmp_path: Path) -> None:
    common = [
        "--servers",
        "2",
        "--grid",
        "4",
        "4",
        "--hidden-dim",
        "32",
        "--trainers",
        "4",
        "--max-steps",
        "60",
    ]
    summary = swarm(tmp_path, *common, "--average-every", "5", "--average-window", "2")
    assert len(summary["trainers"]) == 4
    # Each trainer averaged with the others in most rounds, and all of them ended on one model.
    assert all(t["averaging"]["averaged_with"] >= 2 * t["averaging"]["rounds"] for t in summary["trainers"])
    assert summary["parameter_disagreement"] < 1e-4, summary
    assert all(t["final_test_accuracy"] >= 0.8 for t in summary["trainers"]), summary
    # Without averaging, the same four trainers end on four models.
    apart = swarm(tmp_path, *common)
    assert apart["parameter_disagreement"] > 0.5, apart


def test_swarm_needs_local_and_says_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tesseract", "swarm"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "only --local is supported" in result.stderr


@pytest.mark.parametrize("bad", [["--grid", "0"], ["--servers", "0"], ["--dataset", "nope"]])
def test_bad_swarm_settings_get_a_clear_error(bad: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tesseract", "swarm", "--local", "--epochs", "1", *bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "error" in (result.stderr + result.stdout).lower()


def test_ctrl_c_stops_every_process_of_the_swarm(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import socket

    process = subprocess.Popen(
        [sys.executable, "-m", "tesseract", "swarm", "--local", "--epochs", "50", "--log-every", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a shell job: Ctrl+C reaches all of it
    )
    addresses: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.search(r"DHT bootstrap at (\S+); servers at (.*)$", line):
            addresses = [match.group(1).rstrip(";"), *match.group(2).split(", ")]
        if "step 3/" in line:
            break
    assert addresses, "the swarm never said where its nodes are"
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "interrupted: stopping the swarm" in rest, rest[-2000:]
    for address in addresses:
        host, port = address.rsplit(":", 1)
        with socket.socket() as probe:
            assert probe.connect_ex((host, int(port))) != 0, f"{address} still listens after Ctrl+C"


def test_the_readme_example_runs_against_a_local_swarm() -> None:
    import re

    from tesseract.launch import LocalSwarm

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A taste: a mixture of experts", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "127.0.0.1:31337" in code
    with LocalSwarm(servers=2, grid=(4, 8), hidden_dim=64) as swarm:
        scope: dict = {}
        exec(compile(code.replace("127.0.0.1:31337", swarm.bootstrap.address), "README.md", "exec"), scope)
        assert scope["loss"].grad_fn is not None
        assert scope["moe"].stats["backward_calls"] > 0 and scope["moe"].stats["backward_failures"] == 0
