"""The shard process: an ordinary :class:`VADEngine` on its own event loop, driven over pipes.

The user's process sends batches of small records (open, audio, flush, close,
stop) over the command pipe; audio samples lie in the shard's shared memory ring
(:mod:`prevad_rx._shard_ring`). Each stream's records run in order: audio that fits
and a flush that need not wait are handled at once (a live packet costs no task),
anything else on the stream's pump task, which later records then queue behind.
Results go back in batches, one per loop iteration, pickled and written on the loop
without blocking it (:mod:`prevad_rx._pipes`: it always goes on reading
commands, whatever the user's process does):

* ``("ready", pid, sample_rates)`` / ``("fatal", message)`` once at start;
* ``("ack", position)``: ring space consumed up to ``position``;
* ``("progress", slot, taken, frames_submitted, frames_processed, slices_in_flight,
  dropped_samples, segments)``;
* ``("event", slot, event)``, ``("flushed", slot, token)``, ``("closed", slot, result)``;
* ``("failed", slot, error, cause)``: the stream failed (its later records are dropped);
* ``("alive",)`` every ``HEARTBEAT_INTERVAL`` s while the shard's loop runs;
* ``("stopped",)`` after the engine closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from prevad_rx._engine import VADEngine
from prevad_rx._errors import StreamFailedError
from prevad_rx._loop import IterationEnd
from prevad_rx._pipes import PipeReader, PipeWriter
from prevad_rx._runtime import run
from prevad_rx._shard_ring import RingReader
from prevad_rx._stream import BackpressurePolicy, VADStream
from prevad_rx._types import Segment, SpeechEvent

__all__: list[str] = []  # internal to ShardedVADEngine

log = logging.getLogger("prevad_rx.shards")

#: how often (s) open streams report their counters when nothing else happens
PROGRESS_INTERVAL = 0.1
#: how often (s) the shard says it is alive
HEARTBEAT_INTERVAL = 0.5


def portable_error(error: BaseException, stream_id: str) -> tuple[StreamFailedError, Any]:
    """``error`` (and its cause) as they can cross the pipe: pickled errors lose ``__cause__``."""
    if not isinstance(error, StreamFailedError):
        wrapped = StreamFailedError(f"stream {stream_id!r} failed in its shard: {error}", stream_id)
        wrapped.__cause__ = error
        error = wrapped
    try:
        pickle.dumps(error)
    except Exception:  # noqa: BLE001 - replaced by an error that crosses
        error = StreamFailedError(str(error), stream_id)
    cause = error.__cause__
    try:
        pickle.dumps(cause)
    except Exception:  # noqa: BLE001 - the cause stays behind
        cause = None
    return error, cause


@dataclass
class _Slot:
    stream: VADStream
    pending: deque[tuple[Any, ...]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    taken: int = 0
    segments_sent: int = 0
    frames_reported: int = -1
    failed: bool = False
    #: flushes started without waiting: (frames they need processed, token), in order
    flushes: deque[tuple[int, int]] = field(default_factory=deque)


class _ShardRunner:
    def __init__(
        self, commands: Connection, results: Connection, ring: RingReader, options: bytes
    ) -> None:
        self._commands = commands
        self._results = results
        self._ring = ring
        self._options = options
        self._slots: dict[int, _Slot] = {}
        self._out: list[tuple[Any, ...]] = []
        self._dirty: set[int] = set()
        self._flushing: set[int] = set()  # slots with flushes whose frames moved
        self._abandoning: dict[str, asyncio.Task[Any]] = {}  # stream id -> its close()
        self._deferred: dict[int, list[tuple[Any, ...]]] = {}  # slot -> records held back
        self._acked = 0
        self._writer: PipeWriter | None = None
        self._engine: VADEngine | None = None
        self._stop: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._flush_soon = IterationEnd(loop, self._flush)  # results: a batch per iteration
        self._writer = PipeWriter(self._results, loop)
        try:
            try:
                engine = VADEngine(**pickle.loads(self._options))
                await engine.start()
            except BaseException as exc:  # noqa: BLE001 - reported, then the shard exits
                self._post(("fatal", f"{type(exc).__name__}: {exc}"))
                return
            self._engine = engine
            rates = tuple(sorted(engine.pool.probe().sample_rates))
            self._post(("ready", os.getpid(), rates))
            self._stop = loop.create_future()
            reader = PipeReader(self._commands, loop, self._on_commands, self._user_gone)
            ticker = loop.create_task(self._report_progress())
            try:
                await self._stop
            finally:
                reader.close()
                ticker.cancel()
                for slot in self._slots.values():
                    if slot.task is not None:
                        slot.task.cancel()
                await engine.close()
                self._post(("stopped",))
        finally:
            self._flush()
            self._writer.drain()

    def _pickled(self, batch: list[tuple[Any, ...]]) -> memoryview:
        """The batch as bytes (on the loop). A message that cannot be pickled fails its
        stream instead, and the stream is ended here before the failure is sent, so the
        user's side may reuse its id at once."""
        try:
            return ForkingPickler.dumps(batch)
        except Exception:  # noqa: BLE001 - found and reported message by message below
            pass
        kept: list[tuple[Any, ...]] = []
        for message in batch:
            try:
                pickle.dumps(message)
            except Exception as exc:
                log.exception("a %r result cannot be sent back", message[0])
                if len(message) < 2 or not isinstance(message[1], int):
                    continue
                error = StreamFailedError(
                    f"a result of the stream cannot be sent back from its shard: {exc}"
                )
                self._abandon(message[1])
                message = ("failed", message[1], error, None)
            kept.append(message)
        return ForkingPickler.dumps(kept)

    # ------------------------------------------------------------------ commands

    def _on_commands(self, data: memoryview) -> None:
        """One batch of records from the user's process (a whole pipe message)."""
        for record in pickle.loads(data):
            try:
                self._handle(record)
            except Exception:
                log.exception("shard: handling a %r record failed", record[0])
        self._post(("ack", self._acked))  # the ring space read so far

    def _user_gone(self) -> None:
        """The command pipe ended: the user's process is gone (or closed it): stop."""
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    def _handle(self, record: tuple[Any, ...]) -> None:
        kind = record[0]
        if kind == "audio":
            _, slot_id, offset, length, end = record
            samples = self._ring.read(offset, length)
            self._acked = max(self._acked, end)
            self._queue(slot_id, ("audio", samples))
        elif kind == "open":
            ending = self._abandoning.get(record[2])
            if ending is None:
                self._open(*record[1:])
            else:  # an abandoned stream of that id is still ending here: open after it
                self._deferred[record[1]] = []
                ending.add_done_callback(lambda _: self._open_deferred(record))
        elif kind in ("flush", "close"):
            self._queue(record[1], record)
        elif kind == "stop" and self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    def _open(
        self,
        slot_id: int,
        stream_id: str,
        sample_rate: int,
        config: Any,
        keep_probabilities: bool,
        keep_audio: bool,
        backpressure: BackpressurePolicy,
    ) -> None:
        assert self._engine is not None
        try:
            stream = self._engine.open_stream(
                stream_id,
                sample_rate=sample_rate,
                config=config,
                keep_probabilities=keep_probabilities,
                keep_audio=keep_audio,
                backpressure=backpressure,
            )
        except Exception as exc:  # noqa: BLE001 - fails this stream only
            self._post(("failed", slot_id, *portable_error(exc, stream_id)))
            return
        slot = _Slot(stream)
        self._slots[slot_id] = slot
        stream._on_processed = lambda: self._frames_moved(slot_id, slot)
        stream.subscribe(lambda event: self._on_event(slot_id, slot, event))

    def _open_deferred(self, record: tuple[Any, ...]) -> None:
        waiting = self._deferred.pop(record[1], [])
        self._open(*record[1:])
        for op in waiting:
            self._queue(record[1], op)

    def _queue(self, slot_id: int, op: tuple[Any, ...]) -> None:
        waiting = self._deferred.get(slot_id)
        if waiting is not None:
            waiting.append(op)
            return
        slot = self._slots.get(slot_id)
        if slot is None:
            return  # failed at open; the user's side knows
        if slot.task is None and not slot.failed and self._handled_now(slot_id, slot, op):
            return
        slot.pending.append(op)
        if slot.task is None:
            slot.task = self._loop.create_task(self._pump(slot_id, slot))

    def _handled_now(self, slot_id: int, slot: _Slot, op: tuple[Any, ...]) -> bool:
        """Audio that fits and a flush that need not wait for room, handled at once: the
        common live case costs no task and no await (the audio, validated by the user's
        process, is not validated again). Anything else goes to the stream's pump."""
        kind = op[0]
        if kind == "audio":
            if not slot.stream._push_now(op[1]):
                return False
            slot.taken += 1
            self._dirty.add(slot_id)
        elif kind == "flush":
            target = slot.stream._flush_now()
            if target is None:
                return False
            slot.flushes.append((target, op[2]))
            self._flushing.add(slot_id)  # its frames may all be processed already
        else:
            return False
        self._flush_soon.request()
        return True

    def _frames_moved(self, slot_id: int, slot: _Slot) -> None:
        if slot.flushes:
            self._flushing.add(slot_id)
            self._flush_soon.request()

    def _resolve_flushes(self, slot_id: int, slot: _Slot) -> None:
        """Report the latest flush whose frames are all processed (with the counters)."""
        processed = slot.stream._frames_processed
        reached = None
        while slot.flushes and slot.flushes[0][0] <= processed:
            reached = slot.flushes.popleft()[1]
        if reached is not None:
            self._progress(slot_id, slot)
            self._out.append(("flushed", slot_id, reached))

    async def _pump(self, slot_id: int, slot: _Slot) -> None:
        stream = slot.stream
        try:
            while slot.pending:
                op = slot.pending.popleft()
                kind = op[0]
                if slot.failed:
                    if kind == "audio":
                        slot.taken += 1
                        self._dirty.add(slot_id)
                    elif kind == "close":
                        self._slots.pop(slot_id, None)
                    continue
                try:
                    if kind == "audio":
                        await stream.push(op[1])
                        slot.taken += 1
                        self._dirty.add(slot_id)  # reported once, at the iteration's end
                    elif kind == "flush":
                        await stream.flush()
                        self._progress(slot_id, slot)  # the counters the flush reached
                        self._post(("flushed", slot_id, op[2]))
                    else:
                        result = await stream.close()
                        self._resolve_flushes(slot_id, slot)
                        self._progress(slot_id, slot)
                        self._post(("closed", slot_id, result))
                        self._slots.pop(slot_id, None)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - fails this stream only
                    if kind == "audio":
                        slot.taken += 1
                    self._fail(slot_id, slot, stream.error or exc)
                    if kind == "close":
                        self._slots.pop(slot_id, None)
                    self._dirty.add(slot_id)
                self._flush_soon.request()
        finally:
            slot.task = None
            if slot.failed:
                self._slots.pop(slot_id, None)

    def _fail(self, slot_id: int, slot: _Slot, error: BaseException) -> None:
        slot.flushes.clear()  # the user's side ends the stream's flushes with its failure
        if not slot.failed:
            slot.failed = True
            self._post(("failed", slot_id, *portable_error(error, slot.stream.stream_id)))
        if slot.task is None:  # nothing more comes for it: forget it now
            self._slots.pop(slot_id, None)

    def _abandon(self, slot_id: int) -> None:
        """The user's side was told the stream failed: end it here too, so its id is free."""
        slot = self._slots.get(slot_id)
        if slot is None:
            return
        slot.failed = True
        slot.pending.clear()
        if slot.task is None:
            self._slots.pop(slot_id, None)
        stream_id = slot.stream.stream_id
        task = self._loop.create_task(slot.stream.close())
        self._abandoning[stream_id] = task

        def ended(done: asyncio.Task[Any]) -> None:
            _ignore_outcome(done)
            if self._abandoning.get(stream_id) is done:
                del self._abandoning[stream_id]

        task.add_done_callback(ended)  # runs before the deferred opens added later

    def _on_event(self, slot_id: int, slot: _Slot, event: SpeechEvent) -> None:
        if event.kind == "error":
            if event.error is not None:
                self._fail(slot_id, slot, event.error)
        else:
            self._post(("event", slot_id, event))

    async def _report_progress(self) -> None:
        """Counters of streams that moved, every PROGRESS_INTERVAL; a heartbeat every
        HEARTBEAT_INTERVAL, by which the user's process knows this loop still runs."""
        ticks = 0
        every = max(1, round(HEARTBEAT_INTERVAL / PROGRESS_INTERVAL))
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            for slot_id, slot in self._slots.items():
                if slot.stream.statistics().frames_processed != slot.frames_reported:
                    self._dirty.add(slot_id)
            ticks += 1
            if ticks % every == 0:
                self._post(("alive",))
            elif self._dirty:
                self._flush_soon.request()

    # ------------------------------------------------------------------ results

    def _progress(self, slot_id: int, slot: _Slot) -> None:
        self._dirty.discard(slot_id)
        stats = slot.stream.statistics()
        new_segments: tuple[Segment, ...] = ()
        if stats.segments > slot.segments_sent:
            new_segments = tuple(slot.stream.segments[slot.segments_sent :])
            slot.segments_sent = stats.segments
        slot.frames_reported = stats.frames_processed
        taken, slot.taken = slot.taken, 0
        self._out.append(
            (
                "progress",
                slot_id,
                taken,
                stats.frames_submitted,
                stats.frames_processed,
                stats.slices_in_flight,
                stats.dropped_samples,
                new_segments,
            )
        )

    def _post(self, message: tuple[Any, ...]) -> None:
        self._out.append(message)
        self._flush_soon.request()

    def _flush(self) -> None:
        for slot_id in self._flushing:
            slot = self._slots.get(slot_id)
            if slot is not None:
                self._resolve_flushes(slot_id, slot)
        self._flushing.clear()
        for slot_id in list(self._dirty):
            slot = self._slots.get(slot_id)
            if slot is not None:
                self._progress(slot_id, slot)
            else:
                self._dirty.discard(slot_id)
        if self._out:
            batch, self._out = self._out, []
            assert self._writer is not None
            self._writer.send(self._pickled(batch))


def _ignore_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the stream's end was already reported


def shard_main(
    commands: Connection,
    results: Connection,
    ring_name: str,
    ring_capacity: int,
    options: bytes,
    use_uvloop: bool | None,
    cpus: tuple[int, ...] | None = None,
) -> None:
    """Entry point of a shard process (spawned by :class:`ShardedVADEngine`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the user's process decides when to stop
    if cpus is not None:  # before the backend sizes its thread pools
        os.sched_setaffinity(0, cpus)
    ring = RingReader(ring_name, ring_capacity)
    try:
        run(_ShardRunner(commands, results, ring, options).run(), use_uvloop=use_uvloop)
    finally:
        ring.close()
        commands.close()
        results.close()
