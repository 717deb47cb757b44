"""Run Tesseract nodes as local processes and drive them: for tests, benchmarks and local swarms.

Each node is ``python -m tesseract ...`` with ``--commands``: it prints its address first, then
answers one JSON line on stdout for each JSON line sent to its stdin. Like ``tesseract.net.real``,
this module works with the operating system directly (processes, pipes, signals, the clock).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from tesseract.concurrency import leave_signals_to_the_main_thread
from tesseract.expert_uid import grid_uids

_LISTENING = re.compile(r"listening on (\S+)")
#: Set in every child's environment: the launcher's pid, so the child can ask to die with it.
PARENT_PID_VARIABLE = "TESSERACT_PARENT_PID"
_PR_SET_PDEATHSIG = 1
#: Lines read from a node and not yet consumed; past this the reader waits and the pipe fills, as it
#: would with no reader at all.
_MAX_QUEUED_LINES = 10_000


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child node: ``extra`` added, and our pid for
    ``die_with_parent``."""
    return {**os.environ, PARENT_PID_VARIABLE: str(os.getpid()), **(extra or {})}


def die_with_parent() -> None:
    """In a node started by this module: ask Linux to send SIGTERM when the launcher dies.

    A launcher killed with SIGKILL cannot stop its children, and a DHT node or trainer left behind
    keeps running, its trainer failing every step. SIGTERM (not SIGKILL) lets a server save its
    checkpoints on the way out. The kernel signals when the launcher's *thread* that started the
    child exits, so launchers start nodes from a thread that lives as long as they do (the main one).
    """
    parent = os.environ.pop(PARENT_PID_VARIABLE, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent):  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class NodeProcessError(RuntimeError):
    """A node process died, or did not answer in time."""


class NodeProcess:
    """One ``tesseract <subcommand> --commands`` process."""

    def __init__(
        self,
        arguments: Sequence[str],
        *,
        commands: bool = True,
        env: Mapping[str, str] | None = None,
        program: Sequence[str] = (sys.executable, "-m", "tesseract"),
    ) -> None:
        """Spawn the process; ``wait_until_listening`` then reads its address.

        ``commands=False``: no JSON commands on stdin; call ``drain`` once it listens, so its status
        lines never fill the pipe. ``env``: variables added to this process's environment.
        ``program``: what runs, before ``arguments`` (the ``tesseract`` command by default).
        """
        self.arguments = list(arguments)
        self.name = self.arguments[0] if self.arguments else "node"  # the subcommand, for messages
        self.process = subprocess.Popen(
            [*program, *self.arguments, *(["--commands"] if commands else [])],
            env=child_environment(env),
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
        # One thread reads the pipe for the process's whole life and queues whole lines. Waiting on
        # the pipe's descriptor instead would miss lines already read into Python's buffer together
        # with an earlier one, and wait out the deadline with the answer in hand.
        self._lines: queue.Queue[str | None] = queue.Queue(_MAX_QUEUED_LINES)
        self._sink_lock = threading.Lock()
        self._draining = False
        self._sink: TextIO | None = None
        threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True).start()

    def _read(self) -> None:
        leave_signals_to_the_main_thread()
        stdout = self.process.stdout
        assert stdout is not None
        with stdout:
            for line in stdout:
                while not self._deliver(line):
                    time.sleep(0.05)  # nobody reads: wait, as a full pipe would make the node wait
        while not self._deliver(None):
            time.sleep(0.05)

    def _deliver(self, line: str | None) -> bool:
        """Queue a line (None: the end), or copy it to the sink once draining; False when full."""
        with self._sink_lock:  # so no line is queued after ``drain`` has emptied the queue
            if self._draining:
                if line is not None:
                    self._write_to_sink(line)
                return True
            try:
                self._lines.put_nowait(line)
            except queue.Full:
                return False
            return True

    def _write_to_sink(self, line: str) -> None:
        if self._sink is not None:
            self._sink.write(line)
            self._sink.flush()

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
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise NodeProcessError(
                f"{self.name} node gave no answer in time; last output: {list(self._recent)}"
            ) from None
        if line is None:
            self._lines.put(None)  # every later read sees the end too
            raise NodeProcessError(f"{self.name} node exited ({self.process.poll()}): {list(self._recent)}")
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
        """From now on, copy the node's output lines to ``sink`` (or drop them)."""
        with self._sink_lock:
            self._sink, self._draining = sink, True
            while True:  # lines queued before now go first, in order
                try:
                    line = self._lines.get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    self._lines.put(None)
                    break
                self._write_to_sink(line)

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
        checkpoint_dir: Path | None = None,
        server_arguments: Sequence[str] = (),
    ) -> None:
        uids = grid_uids(uid_prefix, grid)
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
        self.checkpoint_dir = checkpoint_dir
        self.server_arguments = list(server_arguments)
        self.bootstrap: NodeProcess | None = None
        self.servers: list[NodeProcess] = []
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
                    *(["--checkpoint-dir", str(self.checkpoint_dir)] if self.checkpoint_dir else []),
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
        return self.train_together([arguments], stdout=stdout)[0]

    def train_together(
        self, argument_lists: Sequence[Sequence[str]], *, stdout: TextIO | None = None
    ) -> list[int]:
        """Run one ``tesseract train`` per argument list, all at once, against the swarm; their exit
        codes. The first one's output goes to ``stdout``, the others' to the swarm's log."""
        assert self.bootstrap is not None
        command = [sys.executable, "-m", "tesseract", "train", "--initial-peers", self.bootstrap.address]
        trainers = []
        try:
            for index, arguments in enumerate(argument_lists):
                output = stdout if index == 0 else (self.log or subprocess.DEVNULL)
                trainers.append(
                    subprocess.Popen(
                        [*command, "--listen", f"{self.host}:0", *arguments],
                        env=child_environment(self.env),
                        stdout=output,
                        stderr=subprocess.STDOUT if output is not None else None,
                    )
                )
            return [trainer.wait() for trainer in trainers]
        finally:
            for trainer in trainers:
                if trainer.poll() is None:
                    trainer.terminate()
            for trainer in trainers:
                try:
                    trainer.wait(10)
                except subprocess.TimeoutExpired:
                    trainer.kill()
                    trainer.wait()

    def __exit__(self, *exc_info: Any) -> None:
        nodes = [*self.servers, *([self.bootstrap] if self.bootstrap else [])]
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.stop(timeout=20)
