"""Crashes lose little and leave nothing behind: periodic checkpoints, children that die with their
launcher, and a launcher that reads every line its nodes write (real processes on loopback)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import trio

from tesseract.launch import NodeProcess
from tesseract.net import RPCClient
from tesseract.net.real import RealHost
from tests.experts import backward

ROOT = Path(__file__).resolve().parent.parent


def checkpointed_steps(path: Path) -> int | None:
    """The optimizer steps in a checkpoint we wrote ourselves (None: not there yet)."""
    if not path.exists():
        return None
    return int(torch.load(path, weights_only=True)["steps"])


def test_a_killed_server_comes_back_with_the_training_of_its_last_checkpoint(tmp_path: Path) -> None:
    arguments = [
        "server",
        *("--experts", "ffn.[0:2]", "--hidden-dim", "16", "--device", "cpu", "--no-dht"),
        *("--checkpoint-dir", str(tmp_path), "--checkpoint-period", "0.5", "--status-interval", "3600"),
    ]
    server = NodeProcess(arguments).wait_until_listening()
    try:

        async def train(steps: int) -> None:
            async with RealHost.open("127.0.0.1:0") as host, RPCClient(host) as client:
                for _ in range(steps):
                    x, g = torch.randn(4, 16), torch.randn(4, 16)
                    await backward(client, server.address, "ffn.0", [x], [g], timeout=10)

        trio.run(train, 7)
        deadline = time.monotonic() + 15
        while checkpointed_steps(tmp_path / "ffn.0.pt") != 7:  # the next period writes it
            assert time.monotonic() < deadline, "no checkpoint of the 7 steps was written while serving"
            time.sleep(0.1)
    finally:
        server.kill()  # SIGKILL: no graceful shutdown, no final save
    assert not list(tmp_path.glob("*.partial"))
    again = NodeProcess(arguments).wait_until_listening()
    try:
        assert again.command(op="stats")["steps"] == 7
    finally:
        again.stop()


def test_an_answer_that_arrives_with_a_log_line_in_one_write_is_read_at_once() -> None:
    # Both lines reach the pipe in one write, so one read takes both: the answer must not wait in a
    # buffer while the launcher waits on the pipe for more.
    script = (
        "import sys, time\n"
        "sys.stdout.write('listening on 127.0.0.1:1\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        "sys.stdout.write('a log line\\n{\"answer\": 42}\\n')\n"
        "sys.stdout.flush()\n"
        "time.sleep(30)\n"
    )
    node = NodeProcess([], program=[sys.executable, "-c", script]).wait_until_listening(timeout=30)
    try:
        started = time.monotonic()
        assert node.command(timeout=10, op="stats") == {"answer": 42}
        assert time.monotonic() - started < 5
    finally:
        node.kill()


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_swarms_processes_die_with_it_and_its_servers_save_on_the_way(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "tesseract", "swarm", "--local", "--servers", "2"),
            *("--epochs", "50", "--log-every", "1", "--checkpoint-dir", str(checkpoints)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[int] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if re.search(r"step 3/", line):
                break
        children = children_of(process.pid)
        assert len(children) == 4, children  # the DHT node, two servers, the trainer
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 30
        while any(is_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in children if is_running(pid)]
        assert not left, f"processes {left} outlived their launcher"
    finally:
        for pid in children:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(list(checkpoints.glob("*.pt"))) == 32  # the 4x8 grid, saved as the servers stopped
