"""Run Tesseract nodes as local processes and drive them: for tests, benchmarks and local swarms.

Each node is ``python -m tesseract ...`` with ``--commands``: it prints its address first, then
answers one JSON line on stdout for each JSON line sent to its stdin. Like ``tesseract.net.real``,
this module works with the operating system directly (processes, pipes, signals, the clock).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

_LISTENING = re.compile(r"listening on (\S+)")


class NodeProcessError(RuntimeError):
    """A node process died, or did not answer in time."""


class NodeProcess:
    """One ``tesseract <subcommand> --commands`` process."""

    def __init__(
        self, arguments: Sequence[str], *, commands: bool = True, env: Mapping[str, str] | None = None
    ) -> None:
        """Spawn the process; ``wait_until_listening`` then reads its address.

        ``commands=False``: no JSON commands on stdin; call ``drain`` once it listens, so its status
        lines never fill the pipe. ``env``: variables added to this process's environment.
        """
        self.arguments = list(arguments)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tesseract", *self.arguments, *(["--commands"] if commands else [])],
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._recent: deque[str] = deque(maxlen=30)  # non-JSON output, for error messages
        self.started_at = time.monotonic()
        self.address = ""
        self.startup_s = 0.0
        self._draining = False

    def wait_until_listening(self, timeout: float = 60.0) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while not self.address:
            line = self._readline(deadline)
            self._recent.append(line)
            match = _LISTENING.search(line)
            if match:
                self.address = match.group(1)
        self.startup_s = time.monotonic() - self.started_at
        return self

    def _readline(self, deadline: float) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
            raise NodeProcessError(
                f"{self.arguments[0]} node gave no answer in time; last output: {list(self._recent)}"
            )
        line = stdout.readline()
        if not line:
            raise NodeProcessError(
                f"{self.arguments[0]} node exited ({self.process.poll()}): {list(self._recent)}"
            )
        return line.rstrip("\n")

    def command(self, timeout: float = 30.0, **command: Any) -> dict[str, Any]:
        """Send one command; return the node's JSON answer."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise NodeProcessError(f"node {self.address} is gone: {list(self._recent)}") from None
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line.startswith("{"):
                return json.loads(line)
            self._recent.append(line)

    def drain(self, sink: TextIO | None) -> None:
        """From now on, copy the node's output lines to ``sink`` (or drop them) in a daemon thread."""
        stdout = self.process.stdout
        assert stdout is not None

        def copy() -> None:
            with stdout:
                for line in stdout:
                    if sink is not None:
                        sink.write(line)
                        sink.flush()

        self._draining = True
        threading.Thread(target=copy, name=f"drain-{self.address}", daemon=True).start()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no chance to leave gracefully."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        """SIGTERM: the node leaves gracefully (``stop`` waits for it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, so the node leaves gracefully; SIGKILL if it has not exited in time."""
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        if not self._draining and self.process.stdout is not None:
            self.process.stdout.close()


class LocalDHTSwarm:
    """``count`` DHT node processes on loopback, joined through the first one.

    ``with LocalDHTSwarm(16) as swarm: swarm.nodes[3].command(op="get", key="k")``
    """

    def __init__(self, count: int, *, host: str = "127.0.0.1", extra_arguments: Sequence[str] = ()) -> None:
        self.count = count
        self.host = host
        self.extra_arguments = list(extra_arguments)
        self.nodes: list[NodeProcess] = []
        self.startup_s = 0.0

    def __enter__(self) -> LocalDHTSwarm:
        started = time.monotonic()
        try:
            base = ["dht", "--listen", f"{self.host}:0", "--status-interval", "3600", *self.extra_arguments]
            self.nodes.append(NodeProcess(base).wait_until_listening())
            first = self.nodes[0].address
            # Start the rest together, then wait for each one's address line.
            pending = [NodeProcess([*base, "--initial-peers", first]) for _ in range(self.count - 1)]
            self.nodes.extend(pending)
            for node in pending:
                node.wait_until_listening()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.startup_s = time.monotonic() - started
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for node in self.nodes:  # all at once: leaving takes a moment each
            node.terminate()
        for node in self.nodes:
            node.stop()


def split_evenly(items: Sequence[str], parts: int) -> list[list[str]]:
    """``items`` in ``parts`` contiguous chunks whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


class LocalSwarm:
    """A DHT bootstrap node and expert servers sharing a grid, as processes on loopback.

    ``with LocalSwarm(servers=4, grid=(4, 8)) as swarm: swarm.train([...])`` runs a trainer process
    against it. Servers' output goes to ``log`` (one file for all, or nowhere). Leaving the block
    stops every process: SIGTERM (servers finish their work and save), SIGKILL if they hang.
    """

    def __init__(
        self,
        *,
        servers: int = 4,
        grid: Sequence[int] = (4, 8),
        uid_prefix: str = "ffn",
        expert_cls: str = "ffn",
        hidden_dim: int = 64,
        fault_rate: float = 0.0,
        seed: int = 0,
        update_period: float = 10.0,
        host: str = "127.0.0.1",
        log: TextIO | None = None,
        server_arguments: Sequence[str] = (),
    ) -> None:
        uids = [uid_prefix]
        for size in grid:
            uids = [f"{uid}.{coordinate}" for uid in uids for coordinate in range(size)]
        if not 1 <= servers <= len(uids):
            raise ValueError(f"need between 1 and {len(uids)} servers for a grid of {len(uids)} experts")
        self.uids = uids
        self.server_count = servers
        self.expert_cls = expert_cls
        self.hidden_dim = hidden_dim
        self.fault_rate = fault_rate
        self.seed = seed
        self.update_period = update_period
        self.host = host
        self.log = log
        self.server_arguments = list(server_arguments)
        self.bootstrap: NodeProcess | None = None
        self.servers: list[NodeProcess] = []
        self.trainer: subprocess.Popen | None = None
        #: One torch thread per process: five processes on a laptop must not fight over its cores.
        self.env = {"OMP_NUM_THREADS": "1"}

    def __enter__(self) -> LocalSwarm:
        try:
            listen = f"{self.host}:0"
            self.bootstrap = NodeProcess(
                ["dht", "--listen", listen, "--status-interval", "3600"], commands=False
            ).wait_until_listening()
            self.bootstrap.drain(self.log)
            for index, uids in enumerate(split_evenly(self.uids, self.server_count)):
                arguments = [
                    "server",
                    "--experts",
                    ",".join(uids),
                    "--expert-cls",
                    self.expert_cls,
                    "--hidden-dim",
                    str(self.hidden_dim),
                    "--listen",
                    listen,
                    "--initial-peers",
                    self.bootstrap.address,
                    "--update-period",
                    str(self.update_period),
                    "--seed",
                    str(self.seed * 1000 + index),
                    "--fault-rate",
                    str(self.fault_rate),
                    *self.server_arguments,
                ]
                self.servers.append(NodeProcess(arguments, commands=False, env=self.env))
            for server in self.servers:
                server.wait_until_listening()
                server.drain(self.log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def train(self, arguments: Sequence[str], *, stdout: TextIO | None = None) -> int:
        """Run ``tesseract train`` against the swarm (its output to ``stdout``); its exit code."""
        assert self.bootstrap is not None
        command = [sys.executable, "-m", "tesseract", "train", "--initial-peers", self.bootstrap.address]
        self.trainer = subprocess.Popen(
            [*command, "--listen", f"{self.host}:0", *arguments],
            env={**os.environ, **self.env},
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
        )
        try:
            return self.trainer.wait()
        finally:
            if self.trainer.poll() is None:
                self.trainer.terminate()
                try:
                    self.trainer.wait(10)
                except subprocess.TimeoutExpired:
                    self.trainer.kill()
                    self.trainer.wait()

    def __exit__(self, *exc_info: Any) -> None:
        nodes = [*self.servers, *([self.bootstrap] if self.bootstrap else [])]
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.stop(timeout=20)
