"""Run Tesseract nodes as local processes and drive them: for tests, benchmarks and local swarms.

Each node is ``python -m tesseract ...`` with ``--commands``: it prints its address first, then
answers one JSON line on stdout for each JSON line sent to its stdin. Like ``tesseract.net.real``,
this module works with the operating system directly (processes, pipes, signals, the clock).
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

_LISTENING = re.compile(r"listening on (\S+)")


class NodeProcessError(RuntimeError):
    """A node process died, or did not answer in time."""


class NodeProcess:
    """One ``tesseract <subcommand> --commands`` process."""

    def __init__(self, arguments: Sequence[str]) -> None:
        """Spawn the process; ``wait_until_listening`` then reads its address."""
        self.arguments = list(arguments)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tesseract", *self.arguments, "--commands"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._recent: deque[str] = deque(maxlen=30)  # non-JSON output, for error messages
        self.started_at = time.monotonic()
        self.address = ""
        self.startup_s = 0.0

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
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


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
