"""A real ``tesseract server`` process, its descriptor limit at 1,024, against header-only, partial-frame
and idle floods from one loopback address: its memory stays bounded (and goes back after the attack),
and an honest peer from another loopback address is answered within a second throughout (defects 1,
2 and 13's allocator part)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tesseract.net.address import parse_address
from tesseract.net.framing import GROWTH, FrameDecoder
from tesseract.net.messages import FRAME_HEADER, WIRE_VERSION, Request, Response, encode_frame, split_body
from tesseract.net.messages import decode_payload as decode
from tesseract.server.protocol import InfoRequest, InfoResponse

MiB = 1024 * 1024
DESCRIPTOR_LIMIT = 1024
ATTACKER, HONEST = "127.0.0.2", "127.0.0.3"


def limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server(log: Path) -> tuple[subprocess.Popen, tuple[str, int]]:
    arguments = ["server", "--experts", "nop.[0:1]", "--expert-cls", "nop", "--hidden-dim", "16"]
    arguments += ["--device", "cpu", "--no-dht", "--status-interval", "3600"]
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tesseract", *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit_descriptors,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on (\S+)", log.read_text())
        if match:
            return process, parse_address(match.group(1))
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the server did not start: {log.read_text()}")


def connect(source: str, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(address)
    return sock


def ask_for_info(address: tuple[str, int]) -> float:
    """An honest ``expert.info`` call from another loopback address; returns how long it took."""
    started = time.monotonic()
    with connect(HONEST, address) as sock:
        sock.settimeout(5)
        request = encode_frame(Request(1, "expert.info", 5.0), InfoRequest("nop.0"), max_frame_size=MiB)
        sock.sendall(request)
        decoder = FrameDecoder()
        while (frame := decoder.next_frame()) is None:
            data = sock.recv(65536)
            assert data, "the server closed the honest connection"
            decoder.feed(data)
    envelope, payload = split_body(memoryview(frame.body), frame.envelope_size)
    assert isinstance(envelope, Response), envelope
    assert decode(InfoResponse, payload).uid == "nop.0"
    return time.monotonic() - started


@pytest.fixture
def descriptors_for_the_attack() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1500:
        pytest.skip(f"this test opens 1,150 sockets; the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_header_and_idle_floods_against_a_real_server(tmp_path: Path, descriptors_for_the_attack) -> None:
    process, address = start_server(tmp_path / "server.log")
    attack: list[socket.socket] = []
    try:
        pid = process.pid
        assert ask_for_info(address) < 1.0
        before = resident_bytes(pid)

        # 50 connections that each send a header claiming 256 MiB, and nothing more.
        for _ in range(50):
            sock = connect(ATTACKER, address)
            sock.sendall(FRAME_HEADER.pack(256 * MiB, WIRE_VERSION, 0))
            attack.append(sock)
        time.sleep(0.5)  # the server has read every header
        assert ask_for_info(address) < 1.0
        assert resident_bytes(pid) - before <= 256 * MiB
        for sock in attack:
            sock.close()
        attack.clear()

        # 50 connections that send 8 MiB of such a frame each: the budget for unfinished frames
        # (256 MiB, and the oldest frame beyond it) holds; once they are gone, the memory goes back.
        for _ in range(50):
            sock = connect(ATTACKER, address)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(FRAME_HEADER.pack(256 * MiB, WIRE_VERSION, 0) + bytes(8 * MiB))
            attack.append(sock)
        time.sleep(1.0)
        assert ask_for_info(address) < 1.0
        assert resident_bytes(pid) - before <= 256 * MiB + GROWTH * 8 * MiB
        for sock in attack:
            sock.close()
        attack.clear()
        deadline = time.monotonic() + 15
        while resident_bytes(pid) - before > 64 * MiB:
            assert time.monotonic() < deadline, "the attack's memory was never given back"
            time.sleep(0.2)

        # 1,100 idle connections from one address: most are refused at once, none starves the server.
        for _ in range(1100):
            attack.append(connect(ATTACKER, address))
        time.sleep(0.5)
        assert ask_for_info(address) < 1.0
        assert open_descriptors(pid) < DESCRIPTOR_LIMIT - 64
        refused = 0
        for sock in attack:
            sock.setblocking(False)
            try:
                sock.recv(1)  # the refusal's error reply (or the end)
                refused += 1
            except BlockingIOError:
                pass  # held: within the address's share
        assert refused >= 1100 - 128
        assert ask_for_info(address) < 1.0
        assert "EMFILE" not in (tmp_path / "server.log").read_text()
    finally:
        for sock in attack:
            sock.close()
        process.kill()
        process.wait()
