"""PipeWriter: messages into a pipe from an event loop, never blocking it, without a thread.

The shard sends its results to the user's process over the write end of a
``multiprocessing`` pipe, whose reader is an ordinary ``Connection.recv()``. A
blocking write could stall the shard's loop on a full pipe (and then it would
stop reading commands); a writer thread avoids that but costs a thread hand-off
(and a GIL switch) per message. Here a message goes straight into the
non-blocking pipe; only what does not fit waits, in order, for the loop to say
the pipe is writable. The framing is ``Connection.send_bytes``'s, so the reader
needs nothing special.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from multiprocessing.connection import Connection

__all__: list[str] = []  # internal to the shard process

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
            except OSError:  # the user's process is gone
                self._give_up()
                return
            if written == len(part):
                self._pending.popleft()
            else:
                self._pending[0] = part[written:]
        if self._pending and not self._watching:
            self._watching = True
            self._loop.add_writer(self._fd, self._on_writable)
        elif not self._pending and self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)

    def _on_writable(self) -> None:
        self._write_some()

    def drain(self) -> None:
        """Write everything still queued, blocking (at the end, when the loop stops)."""
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)
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

    def _give_up(self) -> None:
        self.closed = True
        self._pending.clear()
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)
