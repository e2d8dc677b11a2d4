"""ShardHandle: the user's side of one shard process of a :class:`ShardedVADEngine`.

It starts the process, owns the two pipes (both non-blocking, ``_pipes.py``) and the
shared-memory ring the stream's samples travel through, batches the records sent to
the shard per loop iteration, and hands each message coming back to the stream it
names (through that stream's :class:`~prevad_rx._sharded_stream.ShardedStreamPort`).
When the process ends unasked, every stream in it fails with
:class:`ShardFailedError` and the engine is asked to start another in its place. It
calls its engine only through a :class:`ShardHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, Literal

from prevad_rx._errors import BackendError, ShardFailedError
from prevad_rx._loop import IterationEnd
from prevad_rx._pipes import PipeReader, PipeWriter
from prevad_rx._shard_ring import ShardRing
from prevad_rx._shard_worker import shard_main

if TYPE_CHECKING:
    from prevad_rx._sharded_stream import ShardedStreamPort

__all__: list[str] = []  # internal to ShardedVADEngine

log = logging.getLogger("prevad_rx.shards")

ShardState = Literal["starting", "ready", "failed", "closing", "closed"]


@dataclass(frozen=True, slots=True)
class ShardHost:
    """What a shard handle needs from its engine (internal to prevad_rx)."""

    loop: asyncio.AbstractEventLoop
    #: the pickled options of the shard's ``VADEngine``
    options: bytes
    use_uvloop: bool | None
    #: the CPUs to pin shard ``index`` to (None: not pinned)
    cpus: Callable[[int], tuple[int, ...] | None]
    #: the shard is ready; its backend runs at these sample rates
    rates_known: Callable[[frozenset[int]], None]
    #: a ready shard's process ended: start another in its place
    replace: Callable[[ShardHandle], object]


class ShardHandle:
    """The user's side of one shard process: pipes, ring, outbox and its streams (by slot)."""

    def __init__(self, host: ShardHost, index: int, restarts: int, ring_samples: int) -> None:
        self._host = host
        self.index = index
        self.restarts = restarts
        self.state: ShardState = "starting"
        self.pid: int | None = None
        self.streams: dict[int, ShardedStreamPort] = {}
        self.streams_opened = 0
        self.frames_processed = 0
        self.chunks_sent = 0
        self.next_slot = 0
        self.outbox: list[tuple[Any, ...]] = []
        self.fatal: str | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.loop = host.loop
        self._flush_soon = IterationEnd(self.loop, self.flush_outbox)  # a batch per iteration
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.last_heard = self.loop.time()
        self.ring = ShardRing(ring_samples)
        ctx = multiprocessing.get_context("spawn")
        child_commands, self.commands = ctx.Pipe(duplex=False)
        self.results, child_results = ctx.Pipe(duplex=False)
        self.process: BaseProcess = ctx.Process(
            target=shard_main,
            args=(child_commands, child_results, self.ring.name, ring_samples, host.options),
            kwargs={"use_uvloop": host.use_uvloop, "cpus": host.cpus(index)},
            name=f"prevad-rx-shard-{index}",
            daemon=True,
        )
        try:
            self.process.start()
        except BaseException:
            self.commands.close()
            self.results.close()
            self.ring.close()
            raise
        finally:
            child_commands.close()
            child_results.close()
        self.pid = self.process.pid
        # both pipes non-blocking: a stalled shard can never stall this loop
        self.writer = PipeWriter(self.commands, self.loop)
        self.reader = PipeReader(self.results, self.loop, self._on_results, self.lost)

    # ------------------------------------------------------------------ sending

    def send(self, record: tuple[Any, ...]) -> None:
        self.outbox.append(record)
        if self.state in ("ready", "closing"):
            self._flush_soon.request()

    def send_audio(self, slot: int, offset: int, samples: int, end: int) -> None:
        """A stream's piece of audio now lies in the ring at ``offset``: tell the shard."""
        self.send(("audio", slot, offset, samples, end))
        self.chunks_sent += 1

    def flush_outbox(self) -> None:
        if not self.outbox or self.state not in ("ready", "closing"):
            return
        batch, self.outbox = self.outbox, []
        self.writer.send(ForkingPickler.dumps(batch))  # a shard that is gone: see lost()

    # ------------------------------------------------------------------ receiving

    def _on_results(self, data: memoryview) -> None:
        """One batch of messages from the shard (a whole pipe message)."""
        self.last_heard = self.loop.time()
        for message in pickle.loads(data):
            try:
                self._handle(message)
            except Exception:
                log.exception("shard %d: handling %r failed", self.index, message[0])

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "progress":
            _, slot, taken, submitted, processed, in_flight, dropped, segments = message
            stream = self.streams.get(slot)
            if stream is not None:
                self.frames_processed += processed - stream.frames_processed()
                stream.on_progress(taken, submitted, processed, in_flight, dropped, segments)
        elif kind == "ack":
            self.ring.ack(message[1])
            for stream in self.streams.values():
                stream.room_changed()
        elif kind == "event":
            stream = self.streams.get(message[1])
            if stream is not None:
                stream.on_event(message[2])
        elif kind == "flushed":
            stream = self.streams.get(message[1])
            if stream is not None:
                stream.on_flushed(message[2])
        elif kind == "closed":
            stream = self.streams.pop(message[1], None)
            if stream is not None:
                stream.on_closed(message[2])
        elif kind == "failed":
            _, slot, error, cause = message
            if cause is not None:
                error.__cause__ = cause
            stream = self.streams.pop(slot, None)
            if stream is not None:
                if error.stream_id is None:
                    error.stream_id = stream.stream.stream_id
                stream.fail(error)
        elif kind == "ready":
            _, self.pid, rates = message
            self._host.rates_known(frozenset(rates))
            if self.state == "starting":
                self.state = "ready"
            if not self.ready.done():
                self.ready.set_result(None)
            self.flush_outbox()  # what was sent while it started
        elif kind == "fatal":
            self.fatal = message[1]

    def check_alive(self, timeout: float) -> None:
        """Kill a ready shard whose loop has not been heard from for ``timeout`` s: its
        streams then fail (ShardFailedError) and it is replaced, instead of hanging."""
        if self.state != "ready" or self.ended.done():
            return
        if self.results.poll():  # news already waiting (this loop was the slow one)
            self.last_heard = self.loop.time()
            return
        silent = self.loop.time() - self.last_heard
        if silent > timeout:
            self.fatal = f"it did not answer for {silent:.1f} s (shard_timeout) and was killed"
            log.error("shard %d (process %s): %s", self.index, self.pid, self.fatal)
            with contextlib.suppress(ProcessLookupError, ValueError):
                self.process.kill()

    # ------------------------------------------------------------------ ending

    def lost(self) -> None:
        """The results pipe ended: the process exited (asked to, or not)."""
        if self.ended.done():
            return
        self.reader.close()
        self.writer.close()
        expected = self.state in ("closing", "closed")
        was_ready = self.state == "ready"
        self.state = "closed" if expected else "failed"
        self.results.close()
        self.commands.close()
        self.ring.close()
        self.outbox.clear()
        if not expected:
            self.process.join(0.1)  # it has closed its pipe: its exit status is due
        why = self.fatal or _exit_reason(self.process.exitcode)
        if self.fatal is None and not self.ready.done():
            why += f" before it was ready (its stderr says why). {_MAIN_GUARD_HINT}"
        error = BackendError(f"shard {self.index} (process {self.pid}) ended: {why}")
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: start() or a stream reports it
        if self.streams:
            if not expected:
                log.error("shard %d (process %s) ended: %s", self.index, self.pid, why)
            for stream in list(self.streams.values()):
                sid = stream.stream.stream_id
                failure = ShardFailedError(
                    f"stream {sid!r}: shard {self.index} (process {self.pid}) ended: {why}",
                    sid,
                    shard=self.index,
                )
                stream.fail(failure)
            self.streams.clear()
        self.ended.set_result(None)
        if was_ready:
            self._host.replace(self)

    async def stop(self, timeout: float) -> None:
        """Ask the shard to stop, wait for it (killing it after ``timeout`` s), reap it (once)."""
        if self.stopping is None:
            self.stopping = self.loop.create_task(self._stop(timeout))
        await asyncio.shield(self.stopping)

    async def _stop(self, timeout: float) -> None:
        if not self.ended.done() and self.state in ("ready", "starting"):
            self.state = "closing"
            self.send(("stop",))
            self.flush_outbox()
        else:
            self.state = "closing" if not self.ended.done() else self.state
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), timeout)
        await self.loop.run_in_executor(None, _reap, self.process, 2.0)
        self.lost()  # no-op once ended; else closes what is left
        self.process.close()


#: the usual reason a spawned shard exits before it is ready
_MAIN_GUARD_HINT = (
    "Shards are spawned and import the main module: a script that starts the engine "
    "when imported must do so under 'if __name__ == \"__main__\":'."
)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "its pipe closed unexpectedly"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _reap(process: BaseProcess, timeout: float) -> None:
    """Join ``process``; terminate, then kill it if it does not end in time."""
    process.join(timeout)
    if process.exitcode is None:
        process.terminate()
        process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
