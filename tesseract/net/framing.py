"""Length-prefixed frames over a byte stream: a sans-IO decoder and a thin async reader.

``FrameDecoder`` takes bytes in any chunking and returns whole frames; it never does I/O, so it is
tested directly against arbitrary splits. A frame that is not complete yet gets its final buffer as
soon as its header is read: the reader then receives the rest straight into it (``writable_tail``),
which is how a 64 MiB tensor crosses the network with no copy beyond the kernel's.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import trio

from tesseract.net.errors import FrameTooLarge, ProtocolError
from tesseract.net.host import Stream
from tesseract.net.messages import FRAME_HEADER, WIRE_VERSION

DEFAULT_MAX_FRAME_SIZE = 256 * 1024 * 1024
#: Below this many missing bytes, a plain receive_some into the decoder is cheaper than receive_into.
RECEIVE_INTO_THRESHOLD = 64 * 1024


class Frame(NamedTuple):
    body: bytearray
    envelope_size: int


class FrameDecoder:
    """Turn a byte stream into frames. Raises ProtocolError/FrameTooLarge once, then stays failed."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._ready: deque[Frame] = deque()
        self._body: bytearray | None = None  # the frame being filled, once its header is known
        self._filled = 0
        self._envelope_size = 0
        self._failed: ProtocolError | None = None

    @property
    def has_partial_frame(self) -> bool:
        return self._body is not None or bool(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise self._failed
        if self._body is not None:
            view = memoryview(data)
            take = min(len(view), len(self._body) - self._filled)
            self._body[self._filled : self._filled + take] = view[:take]
            self.advance(take)
            if take == len(view):
                return
            data = view[take:]
        self._buffer += data
        self._parse()

    def writable_tail(self) -> memoryview | None:
        """The unfilled part of the current frame's buffer, for receiving into directly."""
        if self._body is None:
            return None
        return memoryview(self._body)[self._filled :]

    def advance(self, count: int) -> None:
        """Record that ``count`` bytes were written into ``writable_tail()``."""
        assert self._body is not None
        self._filled += count
        if self._filled == len(self._body):
            self._ready.append(Frame(self._body, self._envelope_size))
            self._body = None

    def next_frame(self) -> Frame | None:
        return self._ready.popleft() if self._ready else None

    def _parse(self) -> None:
        buffer, position = self._buffer, 0
        while len(buffer) - position >= FRAME_HEADER.size:
            size, version, envelope_size = FRAME_HEADER.unpack_from(buffer, position)
            if version != WIRE_VERSION:
                self._fail(
                    ProtocolError(f"unsupported wire version {version} (this node speaks {WIRE_VERSION})")
                )
            if size > self.max_frame_size:
                self._fail(FrameTooLarge(f"frame of {size} bytes exceeds the limit of {self.max_frame_size}"))
            if envelope_size > size:
                self._fail(ProtocolError(f"envelope length {envelope_size} exceeds frame body of {size}"))
            start = position + FRAME_HEADER.size
            end = start + size
            if end <= len(buffer):
                self._ready.append(Frame(buffer[start:end], envelope_size))
                position = end
                continue
            # Incomplete: allocate the frame's final buffer now and fill it as bytes arrive.
            body = bytearray(size)
            available = len(buffer) - start
            body[:available] = memoryview(buffer)[start:]
            self._body, self._filled, self._envelope_size = body, available, envelope_size
            position = len(buffer)
            break
        del buffer[:position]

    def _fail(self, error: ProtocolError) -> None:
        self._failed = error
        self._buffer.clear()
        raise error


class FrameReader:
    """Reads whole frames from a ``Stream``; ``None`` at a clean end of stream."""

    def __init__(self, stream: Stream, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._stream = stream
        self.decoder = FrameDecoder(max_frame_size)

    async def receive_frame(self) -> Frame | None:
        decoder = self.decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            tail = decoder.writable_tail()
            if tail is not None and len(tail) >= RECEIVE_INTO_THRESHOLD:
                count = await self._stream.receive_into(tail)
                if count == 0:
                    raise ProtocolError("stream ended in the middle of a frame")
                decoder.advance(count)
                continue
            data = await self._stream.receive_some()
            if not data:
                if decoder.has_partial_frame:
                    raise ProtocolError("stream ended in the middle of a frame")
                return None
            decoder.feed(data)


async def send_frame(stream: Stream, lock: trio.Lock, frame: bytes | bytearray) -> None:
    """Write one whole frame; the lock keeps concurrent writers' frames from interleaving."""
    await acquire_lock(lock)
    try:
        await stream.send_all(frame)
    finally:
        lock.release()


async def acquire_lock(lock: trio.Lock) -> None:
    """Take a lock; the common, uncontended case costs no schedule point."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
