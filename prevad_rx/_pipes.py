"""PipeWriter and PipeReader: messages through a pipe on an event loop, never blocking it.

The user's process and each shard talk over two ``multiprocessing`` pipes. A blocking
write stalls the writer's loop on a full pipe (a shard that has stopped reading would
stop the user's loop, and with it the watchdog that should kill that shard); a blocking
``recv()`` stalls the reader's loop on a message that has only partly arrived. Here
both ends are non-blocking: a message goes straight into the pipe and only what does
not fit waits, in order, for the loop to say the pipe is writable; the reader takes
what has arrived and hands on each message once it is whole. No thread is involved.
The framing is ``Connection.send_bytes``'s (a 4-byte big-endian length, or -1 and an
8-byte length for messages over 2 GiB).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

__all__: list[str] = []  # internal to ShardedVADEngine

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def framed(data: bytes | memoryview) -> list[bytes | memoryview]:
    """``data`` with the length header ``Connection.send_bytes`` puts before it."""
    n = len(data)
    if n > 0x7FFFFFFF:
        return [_SHORT.pack(-1) + _LONG.pack(n), data]
    return [_SHORT.pack(n), data]


class PipeWriter:
    """Non-blocking framed writes on ``loop``; what the pipe does not take waits for it."""

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._connection = connection
        self._fd = connection.fileno()
        self._loop = loop
        self._pending: deque[memoryview] = deque()
        self._watching = False
        self.closed = False  # the reader is gone: later messages are dropped
        os.set_blocking(self._fd, False)

    @property
    def pending_bytes(self) -> int:
        """Bytes written to this writer that the pipe has not taken yet."""
        return sum(len(part) for part in self._pending)

    def send(self, data: bytes | memoryview) -> None:
        """Write one message (whole and in order), or queue what the pipe cannot take now."""
        if self.closed:
            return
        for part in framed(data):
            self._pending.append(memoryview(part).cast("B"))
        if not self._watching:
            self._write_some()

    def _write_some(self) -> None:
        while self._pending:
            part = self._pending[0]
            try:
                written = os.write(self._fd, part)
            except BlockingIOError:
                break
            except OSError:  # the reading process is gone
                self._give_up()
                return
            if written == len(part):
                self._pending.popleft()
            else:
                self._pending[0] = part[written:]
        if self._pending and not self._watching:
            self._watching = True
            self._loop.add_writer(self._fd, self._write_some)
        elif not self._pending:
            self._stop_watching()

    def drain(self) -> None:
        """Write everything still queued, blocking (at the end, when the loop stops)."""
        self._stop_watching()
        if self.closed or not self._pending:
            return
        os.set_blocking(self._fd, True)
        try:
            while self._pending:
                part = self._pending.popleft()
                while part:
                    part = part[os.write(self._fd, part) :]
        except OSError:
            self._give_up()

    def close(self) -> None:
        """Stop writing (idempotent): what is queued is dropped, later messages too."""
        self._give_up()

    def _give_up(self) -> None:
        self.closed = True
        self._pending.clear()
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)


class PipeReader:
    """Calls ``on_message`` with each whole message that arrives on ``connection`` (on
    ``loop``, in order) and ``on_end`` once when the writer has gone."""

    _CHUNK = 1 << 16

    def __init__(
        self,
        connection: Connection,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[memoryview], object],
        on_end: Callable[[], object],
    ) -> None:
        self._fd = connection.fileno()
        self._loop = loop
        self._on_message = on_message
        self._on_end = on_end
        self._buffer = bytearray()
        self._reading = True
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        ended = False
        while True:
            try:
                data = os.read(self._fd, self._CHUNK)
            except BlockingIOError:
                break
            except OSError:
                ended = True
                break
            if not data:
                ended = True
                break
            self._buffer += data
            if len(data) < self._CHUNK:
                break
        self._deliver()
        if ended:
            self.close()
            self._on_end()

    def _deliver(self) -> None:
        buffer, start = self._buffer, 0
        view = memoryview(buffer)
        try:
            while self._reading:
                if len(buffer) - start < 4:
                    break
                (size,) = _SHORT.unpack_from(buffer, start)
                header = 4
                if size == -1:
                    if len(buffer) - start < 12:
                        break
                    (size,) = _LONG.unpack_from(buffer, start + 4)
                    header = 12
                if len(buffer) - start - header < size:
                    break
                begin = start + header
                start = begin + size
                with view[begin:start] as message:  # valid during the call only
                    self._on_message(message)
        finally:
            view.release()
            del buffer[:start]

    def close(self) -> None:
        """Stop reading (idempotent); nothing more is delivered."""
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
