"""The command line entry points, and the network benchmark's output contract (not its speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCH_KEYS = {
    "decode_gbps",
    "memcpy_gbps",
    "rpc_small_p50_us",
    "bare_small_p50_us",
    "rpc_large_gbps",
    "bare_large_gbps",
    "sim_messages_per_s",
    "sim_trace_hash",
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_python_dash_m_tesseract_matches_the_command() -> None:
    result = run("-m", "tesseract", "--version")
    assert result.returncode == 0 and result.stdout.startswith("tesseract-moe ")
    result = run("-m", "tesseract", "--help")
    assert result.returncode == 0 and "bench" in result.stdout


def test_output_cut_short_by_its_reader_ends_without_a_traceback() -> None:
    """``tesseract sim validate FILE | head -1``: the reader closes the pipe before the command
    writes; the command stops quietly."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tesseract", "sim", "validate", "scenarios/quickstart.yaml"],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            # Buffered, as in a shell: the write fails only when the output is flushed.
            env={key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"},
        )
    finally:
        os.close(write)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr


def test_a_dht_node_starts_without_loading_torch() -> None:
    """16 DHT processes on two cores start in about a second only because none of them imports torch."""
    probe = "import sys; from tesseract import cli; cli.build_parser(); print('torch' in sys.modules)"
    result = run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_bench_net_quick_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("-m", "tesseract", "bench", "net", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data.keys() >= BENCH_KEYS
    assert all(data[key] > 0 for key in BENCH_KEYS - {"sim_trace_hash"})
    assert "small RPC p50" in result.stdout  # the table
    # The simulated part is deterministic: a second run reproduces its trace hash.
    again = tmp_path / "again.json"
    run("benchmarks/bench_net.py", "--quick", "--json", str(again))
    assert json.loads(again.read_text())["sim_trace_hash"] == data["sim_trace_hash"]


def test_bench_dht_writes_its_keys_in_both_modes(tmp_path: Path) -> None:
    sim = tmp_path / "sim.json"
    result = run(
        "benchmarks/bench_dht.py",
        "--sim",
        "--nodes",
        "60",
        "--duration",
        "20",
        "--keys",
        "20",
        "--json",
        str(sim),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(sim.read_text())
    assert {"get_success_rate", "mean_rounds", "p50_get_ms", "p99_get_ms", "wall_s"} <= data.keys()
    assert data["gets"] > 0 and 0 <= data["get_success_rate"] <= 1
    real = tmp_path / "real.json"
    result = run("benchmarks/bench_dht.py", "--real", "--nodes", "4", "--keys", "4", "--json", str(real))
    assert result.returncode == 0, result.stderr
    data = json.loads(real.read_text())
    assert {"get_p50_ms", "get_p99_ms", "store_p50_ms", "get_success_rate", "startup_s"} <= data.keys()
    assert data["get_success_rate"] == 1.0


def test_bench_throughput_writes_its_keys(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    result = run(
        "benchmarks/bench_throughput.py",
        "--clients",
        "2",
        "--experts",
        "2",
        "--hidden-dim",
        "32",
        "--batch",
        "8",
        "--warmup",
        "0.5",
        "--duration",
        "1",
        "--tiny-calls",
        "20",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    keys = {"remote_samples_per_s", "local_samples_per_s", "efficiency", "tiny_fwd_bwd_p50_ms", "parameters"}
    assert keys <= data.keys()
    assert data["remote_samples_per_s"] > 0 and data["local_samples_per_s"] > 0
    assert data["parameters"]["clients"] == 2 and data["parameters"]["batch"] == 8


def test_bench_moe_writes_its_keys(tmp_path: Path) -> None:
    out = tmp_path / "moe.json"
    result = run(
        "benchmarks/bench_moe.py",
        *("--grid", "2", "2", "--hidden-dim", "16", "--batch", "8", "--servers", "2"),
        *("--warmup", "0.5", "--duration", "1", "--json", str(out)),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {
        "moe_efficiency",
        "beam_search_share",
        "remote_samples_per_s",
        "local_samples_per_s",
    } <= data.keys()
    assert data["remote_samples_per_s"] > 0 and 0 <= data["beam_search_share"] < 1
    assert data["failed_calls"] == 0


def test_train_and_swarm_commands_explain_themselves() -> None:
    for command in ("train", "swarm", "server", "dht"):
        result = run("-m", "tesseract", command, "--help")
        assert result.returncode == 0 and "--" in result.stdout, command
    result = run("-m", "tesseract", "train", "--initial-peers", "127.0.0.1:9", "--dataset", "nope")
    assert result.returncode == 2 and "unknown data set" in result.stderr


def test_the_swarm_hands_its_settings_on_to_the_trainer_unchanged() -> None:
    from tesseract import cli
    from tesseract.swarm import command as swarm_command

    parser = cli.build_parser()
    given = ["--grid", "2", "3", "--k-best", "3", "--allow-zero-outputs", "--max-steps", "7", "--seed", "4"]
    swarm = parser.parse_args(["swarm", "--local", *given])
    handed_on = swarm_command.trainer_arguments(swarm, Path("summary.json"))
    train = parser.parse_args(["train", "--initial-peers", "127.0.0.1:1", *handed_on])
    shared = set(vars(train)) & set(vars(swarm)) - {"command", "json"}
    assert {
        "grid",
        "k_best",
        "allow_zero_outputs",
        "max_steps",
        "seed",
        "dataset",
        "detect_anomalies",
    } <= shared
    assert {name: getattr(train, name) for name in shared} == {name: getattr(swarm, name) for name in shared}
    assert train.json == Path("summary.json")
