"""The model stage's bookkeeping: lanes, queues, batch selection and failures.

A :class:`LaneTable` holds what the stage knows about its streams and decides
what runs next; it starts no thread and takes no lock (its owner serializes
every call). Each stream id has a :class:`Lane` per *generation*: a stream id
reused after its last slice gets a new lane that waits until the old one has
emitted everything.

Input: slices in ``seq`` order per stream (:meth:`LaneTable.submit`), upstream
failures (:meth:`LaneTable.fail`), and what the backend calls returned.
Output: batches to run (:class:`EncodeBatch`, :class:`DecodeBatch`) and, after
each step, a :class:`Followup`: the failures to emit, the pool tasks to
start, whether the stage is done.

The life of a slice: queued for encoding (if the lane's rate can be encoded
and it has frames), then *ready* in its lane until the lane's decode reaches
its ``seq``; a lane whose next slice is ready waits in the ready queue. A
lane is *busy* while a worker holds it (decoding, emitting, or emitting its
failure). A slice is *in flight* from :meth:`LaneTable.submit` until it is
emitted or dropped with its stream; that count is kept in one place
(``_release``), which also reports it to ``on_release``.

After a failure the lane is retired and the stream's remaining slices are
dropped up to its last (:class:`~prevad_rx.operators.FailedStreams`). A batch
whose call overran its deadline is undone: alone, it fails its stream with a
:class:`~prevad_rx.SliceTimeoutError`; with several streams, each is run
again alone (*solo*) until it succeeds, so only the culprit fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from prevad_rx._errors import SliceTimeoutError, StreamFailedError
from prevad_rx._types import AudioSlice, StreamFailure
from prevad_rx.operators._builder import FailedStreams

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from prevad_rx.backends import ModelResult

__all__ = [
    "DecodeBatch",
    "EncodeBatch",
    "Followup",
    "Lane",
    "LaneTable",
    "NotRun",
    "StageStatistics",
    "TaskSlots",
    "Work",
]

#: No task to start (``submit`` of a slice that was dropped).
NO_TASKS = (0, 0)

#: Queued frames that wake another encode task: below this one worker encodes
#: them all in one call (fewer, larger calls; no threads contending for the GIL).
MIN_ENCODE_FRAMES = 16
#: Ready lanes that wake another decode task.
MIN_DECODE_LANES = 8


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """A snapshot of the model stage: queues, in-flight work and counters."""

    streams: int
    queued_encode_slices: int
    encoded_waiting_slices: int
    decoding_streams: int
    in_flight_slices: int
    frames_processed: int
    encode_calls: int
    decode_calls: int
    decoded_streams: int
    failed_streams: int
    timed_out_calls: int

    @property
    def mean_streams_per_decode(self) -> float:
        return self.decoded_streams / self.decode_calls if self.decode_calls else 0.0


@dataclass(slots=True)
class Work:
    """A slice waiting to be decoded, with its encoder features (None: decoded from audio)."""

    slice: AudioSlice
    features: NDArray[np.float32] | None = None


@dataclass(slots=True, eq=False)
class Lane:
    """One stream's place in the stage (one *generation* of a stream id)."""

    stream_id: str
    sample_rate: int
    encodable: bool
    state: NDArray[np.float32]
    next_seq: int = 0
    ready: dict[int, Work] = field(default_factory=dict)
    queued: int = 0  # slices submitted and not yet emitted or dropped
    busy: bool = False  # a worker holds the lane (decoding or emitting)
    in_ready_queue: bool = False
    saw_last: bool = False  # upstream sends nothing more for this stream
    gone: bool = False  # finished or failed; its remaining work is dropped
    waiting_for: Lane | None = None  # the previous generation, still emitting
    successor: Lane | None = None
    error: StreamFailedError | None = None
    solo: bool = False  # after a timed-out batch: run alone until it succeeds

    def is_ready(self) -> bool:
        return (
            not self.busy
            and not self.gone
            and self.error is None
            and self.waiting_for is None
            and self.next_seq in self.ready
        )


class TaskSlots:
    """Pool tasks of one kind queued or running: at most one per worker, and one per
    ``unit`` of queued work.

    A task takes its share of the queue and re-queues itself while work
    remains, so a burst is batched instead of waking a worker per slice. A
    further worker is woken only for at least ``unit`` more work: a small
    queue is one batched call on one worker rather than several tiny calls
    whose threads contend for the interpreter.
    """

    __slots__ = ("_limit", "_unit", "running")

    def __init__(self, limit: int, unit: int = 1) -> None:
        self._limit = limit
        self._unit = unit
        self.running = 0

    def reserve(self, items: int, work: int | None = None) -> int:
        """Reserve tasks for ``items`` waiting items holding ``work`` (default: ``items``)
        units of work; returns how many to start."""
        running = self.running
        if not items or running >= self._limit:
            return 0
        wanted = min(self._limit, items, -(-(items if work is None else work) // self._unit))
        if wanted <= running:
            return 0
        self.running = wanted
        return wanted - running

    def share(self, work: int) -> int:
        """How much of ``work`` queued one task takes: enough to batch (at least a
        ``unit``), not so much that other workers sit idle."""
        return max(self._unit, -(-work // self._limit))

    def end(self) -> None:
        """A task of this kind ended (found no work, or gave its slot up)."""
        self.running -= 1


@dataclass(slots=True)
class Followup:
    """What the stage's owner does once it has let go of its lock, in this order:
    emit the failure of each lane in ``flush``, start ``encode`` and ``decode``
    tasks, call ``on_complete`` if ``done``, and run the current task again if
    ``again``."""

    flush: list[Lane] = field(default_factory=list)
    encode: int = 0
    decode: int = 0
    done: bool = False
    again: bool = False


@dataclass(slots=True, eq=False)
class EncodeBatch:
    """Slices of any streams, for one encoder call."""

    name: ClassVar[str] = "encode"
    entries: list[tuple[Lane, AudioSlice]]
    frames: int

    @property
    def slices(self) -> list[AudioSlice]:
        return [item for _, item in self.entries]

    @property
    def audio_seconds(self) -> float:
        first = self.entries[0][1]
        return self.frames * first.frame_samples / first.sample_rate

    def __len__(self) -> int:
        return len(self.entries)

    def lane(self, index: int) -> Lane:
        return self.entries[index][0]

    def first_slice(self, index: int) -> AudioSlice:
        return self.entries[index][1]

    def slots(self, table: LaneTable) -> TaskSlots:
        return table.encoding

    def let_go(self, index: int) -> None:
        """The call was given up: nothing held the lane."""

    def retry_alone(self, table: LaneTable, index: int) -> None:
        lane, item = self.entries[index]
        table._retry_encode_alone(lane, item)


@dataclass(slots=True, eq=False)
class DecodeBatch:
    """Runs of consecutive encoded slices, one per lane, for one decoder call."""

    name: ClassVar[str] = "decode"
    runs: list[tuple[Lane, list[Work]]]

    @property
    def audio_seconds(self) -> float:
        return sum(
            w.slice.num_frames * w.slice.frame_samples / w.slice.sample_rate
            for _, works in self.runs
            for w in works
        )

    def __len__(self) -> int:
        return len(self.runs)

    def lane(self, index: int) -> Lane:
        return self.runs[index][0]

    def first_slice(self, index: int) -> AudioSlice:
        return self.runs[index][1][0].slice

    def slots(self, table: LaneTable) -> TaskSlots:
        return table.decoding

    def let_go(self, index: int) -> None:
        """The call was given up: the lane is no longer held."""
        self.runs[index][0].busy = False

    def retry_alone(self, table: LaneTable, index: int) -> None:
        lane, works = self.runs[index]
        table._retry_decode_alone(lane, works)


Batch = EncodeBatch | DecodeBatch


class LaneTable:
    """Lanes, the encode and ready queues, and the stage's counters (see the module doc).

    ``workers`` bounds the tasks of each kind and the share of a queue one
    task takes; another encode task starts only for ``min_encode_frames`` more
    queued frames, another decode task only for ``min_decode_lanes`` more
    ready lanes (:class:`TaskSlots`). ``max_batch_frames`` bounds the frames of
    one encoder call and of one lane's run in a decoder call. ``on_release(n)``
    is called as ``n`` submitted slices leave (emitted or dropped).
    """

    def __init__(
        self,
        *,
        initial_state: NDArray[np.float32],
        encodable: Mapping[int, bool],
        workers: int,
        max_batch_frames: int,
        min_encode_frames: int = MIN_ENCODE_FRAMES,
        min_decode_lanes: int = MIN_DECODE_LANES,
        on_release: Callable[[int], None] | None = None,
    ) -> None:
        self._initial_state = initial_state
        self._encodable = dict(encodable)
        self._max_batch_frames = max_batch_frames
        self._on_release = on_release
        self._lanes: dict[str, Lane] = {}  # the newest generation of each stream id
        #: retired lanes whose last results or failure are still being emitted: a new
        #: generation of the id waits for them
        self._emitting: dict[str, Lane] = {}
        self._failed = FailedStreams()  # their remaining slices are dropped up to the last
        self._encode_queue: deque[tuple[Lane, AudioSlice, bool]] = deque()  # (.., solo)
        self._encode_queued_frames = 0
        self._ready_lanes: deque[Lane] = deque()
        self.encoding = TaskSlots(workers, min_encode_frames)
        self.decoding = TaskSlots(workers, min_decode_lanes)
        self._in_flight = 0
        self.completing = False  # no more input: done once nothing is in flight
        self.terminated = False  # done or stopped: no more work is taken
        self.stopped = False  # terminate()d: nothing more is emitted
        self._frames = 0
        self._encode_calls = 0
        self._decode_calls = 0
        self._decoded_streams = 0
        self._failed_streams = 0
        self._timeouts = 0

    # ---------------------------------------------------------------- inputs

    def submit(self, item: AudioSlice) -> tuple[int, int]:
        """Queue one slice; returns the (encode, decode) tasks to start. A slice dropped
        at once (its stream failed, or the stage is terminated) is released at once."""
        sid = item.stream_id
        if self.terminated or self._failed.drops(sid, item.is_last):
            if self._on_release is not None:
                self._on_release(1)  # it leaves now: its admission slot is free again
            return NO_TASKS
        lane = self._lanes.get(sid)
        if lane is None or lane.saw_last:
            predecessor = lane if lane is not None else self._emitting.get(sid)
            lane = self._new_lane(sid, item.sample_rate, predecessor=predecessor)
        lane.queued += 1
        lane.saw_last = item.is_last
        self._in_flight += 1
        if lane.encodable and item.num_frames:
            self._encode_queue.append((lane, item, False))
            self._encode_queued_frames += item.num_frames
        else:
            features = np.zeros((0, 0), np.float32) if lane.encodable else None
            lane.ready[item.seq] = Work(item, features)
            self._mark_if_ready(lane)
        return self.wanted_tasks()

    def fail(self, failure: StreamFailure) -> Lane | None:
        """An upstream failure: the lane whose failure to flush (None once terminated)."""
        if self.terminated:
            return None
        lane = self._lanes.get(failure.stream_id)
        if lane is None or lane.saw_last:
            lane = self._new_lane(failure.stream_id, 0, predecessor=lane)
        lane.saw_last = True
        if lane.error is None:
            lane.error = failure.error
        return lane

    def complete(self) -> bool:
        """No more input; True if the stage is done now (nothing in flight)."""
        self.completing = True
        done = self._in_flight == 0 and not self.terminated
        if done:
            self.terminated = True
        return done

    def terminate(self) -> None:
        """Stop: drop every lane and queued slice."""
        self.terminated = True
        self.stopped = True
        self._lanes.clear()
        self._encode_queue.clear()
        self._ready_lanes.clear()

    def fail_all(self, exc: BaseException) -> list[Lane]:
        """Fail every lane (the pool is gone); returns the lanes whose failures to flush."""
        lanes = list(self._lanes.values())
        for lane in lanes:
            if lane.error is None:
                lane.error = StreamFailedError(
                    f"stream {lane.stream_id!r} stopped: {exc}", lane.stream_id
                )
        return lanes

    def statistics(self) -> StageStatistics:
        lanes = list(self._lanes.values())
        return StageStatistics(
            streams=len(lanes),
            queued_encode_slices=len(self._encode_queue),
            encoded_waiting_slices=sum(len(lane.ready) for lane in lanes),
            decoding_streams=sum(lane.busy for lane in lanes),
            in_flight_slices=self._in_flight,
            frames_processed=self._frames,
            encode_calls=self._encode_calls,
            decode_calls=self._decode_calls,
            decoded_streams=self._decoded_streams,
            failed_streams=self._failed_streams,
            timed_out_calls=self._timeouts,
        )

    def wanted_tasks(self) -> tuple[int, int]:
        """Reserve and count the (encode, decode) tasks to start for the queued work."""
        return (
            self.encoding.reserve(len(self._encode_queue), self._encode_queued_frames),
            self.decoding.reserve(len(self._ready_lanes)),
        )

    # ----------------------------------------------------------------- encode

    def next_encode_batch(self) -> EncodeBatch | None:
        """The next encoder call's slices; None ends the asking task."""
        if self.terminated:
            self.encoding.end()
            return None
        budget = min(self._max_batch_frames, self.encoding.share(self._encode_queued_frames))
        entries: list[tuple[Lane, AudioSlice]] = []
        frames = 0
        queue = self._encode_queue
        while queue:
            lane, item, solo = queue[0]
            if entries and (solo or frames + item.num_frames > budget):
                break
            queue.popleft()
            self._encode_queued_frames -= item.num_frames
            if lane.gone or lane.error is not None:
                continue
            entries.append((lane, item))
            frames += item.num_frames
            if solo:
                break  # retried alone after a timed-out batch
        if not entries:
            self.encoding.end()
            return None
        return EncodeBatch(entries, frames)

    def encoded(
        self, batch: EncodeBatch, outcomes: Sequence[NDArray[np.float32] | BaseException]
    ) -> Followup:
        """An encoder call returned: features, or the exception of each slice's stream."""
        self._encode_calls += 1
        failed: list[Lane] = []
        for (lane, item), outcome in zip(batch.entries, outcomes, strict=True):
            if lane.gone or lane.error is not None:
                continue
            if isinstance(outcome, NotRun):
                self._retry_encode_alone(lane, item)
                continue
            if isinstance(outcome, BaseException):
                lane.error = slice_error("encoding", item, outcome)
                failed.append(lane)
                continue
            lane.ready[item.seq] = Work(item, outcome)
            self._mark_if_ready(lane)
        again = bool(self._encode_queue) and not self.terminated
        if not again:
            self.encoding.end()
        return self._followup(failed, again=again)

    # ----------------------------------------------------------------- decode

    def next_decode_batch(self) -> DecodeBatch | None:
        """The next decoder call's runs (the lanes are held); None ends the asking task."""
        if self.terminated:
            self.decoding.end()
            return None
        runs: list[tuple[Lane, list[Work]]] = []
        take = self.decoding.share(len(self._ready_lanes))
        ready = self._ready_lanes
        while ready and len(runs) < take:
            if runs and ready[0].solo:
                break
            lane = ready.popleft()
            lane.in_ready_queue = False
            if not lane.is_ready():
                continue
            lane.busy = True
            works: list[Work] = []
            frames = 0
            while lane.next_seq + len(works) in lane.ready and frames < self._max_batch_frames:
                work = lane.ready.pop(lane.next_seq + len(works))
                works.append(work)
                frames += work.slice.num_frames
            runs.append((lane, works))
            if lane.solo:
                break  # retried alone after a timed-out batch
        if not runs:
            self.decoding.end()
            return None
        return DecodeBatch(runs)

    def decoded(self, batch: DecodeBatch) -> None:
        """A decoder call returned (its runs are then handled one by one)."""
        self._decode_calls += 1
        self._decoded_streams += len(batch.runs)

    def run_failed(self, lane: Lane, works: list[Work], cause: BaseException) -> Followup:
        """A lane's run failed in the decoder: its failure is due (its slices leave with
        it, in :meth:`end_flush`, so the stage cannot finish before it is out)."""
        if lane.error is None:
            lane.error = slice_error("decoding", works[0].slice, cause)
        lane.busy = False
        return Followup([lane])

    def run_not_run(self, lane: Lane, works: list[Work]) -> Followup:
        """A lane's run was not tried (:class:`NotRun`): it runs again alone, elsewhere."""
        lane.busy = False
        self._retry_decode_alone(lane, works)
        return self._followup([])

    def run_decoded(self, lane: Lane, works: list[Work], result: ModelResult) -> None:
        """A lane's run succeeded: advance the lane (still held until emitted)."""
        lane.solo = False
        lane.state = result.state
        lane.next_seq += len(works)
        if works[-1].slice.is_last:
            self._retire(lane)
            self._emitting[lane.stream_id] = lane  # until runs_emitted

    def runs_emitted(self, runs: list[tuple[Lane, list[Work], int]]) -> Followup:
        """The runs of a decode batch (lane, works, frames) were emitted: let each lane
        (or its successor) go on. One followup and one release for them all."""
        flush: list[Lane] = []
        released = 0
        done = False
        for lane, works, frames in runs:
            lane.busy = False
            self._frames += frames
            failed_successor = None
            if works[-1].slice.is_last:
                self._stop_emitting(lane)
                failed_successor = self._release_successor(lane)
            else:
                self._mark_if_ready(lane)
            failure_due = lane.error is not None and not lane.gone
            if failure_due:
                flush.append(lane)
            if failed_successor is not None:
                flush.append(failed_successor)
            # with a failure due, the run's slices leave with it (end_flush), not before
            if not failure_due:
                done = self._leave(len(works), lane) or done
                released += len(works)
        if self._on_release is not None and released:
            self._on_release(released)
        return self._followup(flush, done=done)

    def decode_task_step(self) -> Followup:
        """A decode task handled its batch: run it again while lanes are ready."""
        again = bool(self._ready_lanes) and not self.terminated
        if not again:
            self.decoding.end()
        return self._followup([], again=again)

    # --------------------------------------------------------------- failures

    def begin_flush(self, lane: Lane) -> StreamFailedError | None:
        """Retire a failed lane that no worker holds and return its error, which the owner
        then emits; None if it cannot be flushed now (whoever releases the lane flushes
        it). Its slices leave the stage only in :meth:`end_flush`, once the error is out:
        the stage cannot end before its last failure was emitted."""
        if lane.busy or lane.gone or lane.error is None or lane.waiting_for is not None:
            return None
        lane.busy = True
        error = lane.error
        self._retire(lane)
        self._emitting[lane.stream_id] = lane  # until end_flush
        if not lane.saw_last:
            self._failed.add(lane.stream_id)
        self._encode_queue = deque(e for e in self._encode_queue if e[0] is not lane)
        self._encode_queued_frames = sum(e[1].num_frames for e in self._encode_queue)
        lane.ready.clear()
        self._failed_streams += 1
        return error

    def end_flush(self, lane: Lane) -> Followup:
        """A failed lane's failure was emitted: its slices leave the stage, its successor
        may go on."""
        done = self._release(lane.queued, lane)
        lane.busy = False
        self._stop_emitting(lane)
        failed_successor = self._release_successor(lane)
        return self._followup([] if failed_successor is None else [failed_successor], done=done)

    def timed_out(self, batch: Batch, timeout: float) -> Followup:
        """A call overran its deadline (its task is gone): fail its stream, or, when it
        held several, run each again alone (only the culprit hangs again; the others'
        states were not touched, so rerunning them is exact)."""
        self._timeouts += 1
        batch.slots(self).end()
        alone = len(batch) == 1
        failed: list[Lane] = []
        for index in reversed(range(len(batch))):
            lane = batch.lane(index)
            batch.let_go(index)
            if lane.gone:
                continue
            if lane.error is not None:  # failed while held: flushed by its release, now
                failed.append(lane)
            elif alone:
                first = batch.first_slice(index)
                lane.error = SliceTimeoutError(
                    f"stream {first.stream_id!r}: {batch.name} of slice {first.seq} did "
                    f"not finish within {timeout:.1f} s",
                    first.stream_id,
                    first.seq,
                )
                failed.append(lane)
            else:
                batch.retry_alone(self, index)
        return self._followup(failed)

    # -------------------------------------------------------------- internals

    def _followup(self, flush: list[Lane], *, done: bool = False, again: bool = False) -> Followup:
        encode, decode = self.wanted_tasks()
        return Followup(flush, encode, decode, done, again)

    def _new_lane(self, sid: str, sample_rate: int, predecessor: Lane | None) -> Lane:
        """Start a stream's lane; a still-emitting predecessor goes first."""
        lane = Lane(
            sid,
            sample_rate,
            self._encodable.get(sample_rate, False),
            self._initial_state.copy(),
        )
        if predecessor is not None and (not predecessor.gone or predecessor.busy):
            lane.waiting_for = predecessor  # still working, or emitting its last
            predecessor.successor = lane
        self._lanes[sid] = lane
        return lane

    def _mark_if_ready(self, lane: Lane) -> None:
        """Queue the lane for decoding if it can run now."""
        if lane.is_ready() and not lane.in_ready_queue:
            lane.in_ready_queue = True
            self._ready_lanes.append(lane)

    def _retire(self, lane: Lane) -> None:
        """The lane takes no more work."""
        lane.gone = True
        if self._lanes.get(lane.stream_id) is lane:
            del self._lanes[lane.stream_id]

    def _stop_emitting(self, lane: Lane) -> None:
        if self._emitting.get(lane.stream_id) is lane:
            del self._emitting[lane.stream_id]

    def _release_successor(self, lane: Lane) -> Lane | None:
        """Let the next generation of the stream id decode and emit; returns the
        successor if it failed while waiting (its failure is then to be flushed)."""
        successor = lane.successor
        if successor is None:
            return None
        lane.successor = None
        successor.waiting_for = None
        if successor.error is not None:
            return successor
        self._mark_if_ready(successor)
        return None

    def _release(self, count: int, lane: Lane) -> bool:
        """``count`` of the lane's slices leave the stage; True if the stage is done."""
        done = self._leave(count, lane)
        if self._on_release is not None and count:
            self._on_release(count)
        return done

    def _leave(self, count: int, lane: Lane) -> bool:
        """:meth:`_release` without reporting it (the caller reports several at once)."""
        lane.queued -= count
        self._in_flight -= count
        if self.completing and self._in_flight == 0 and not self.terminated:
            self.terminated = True
            return True
        return False

    def _retry_encode_alone(self, lane: Lane, item: AudioSlice) -> None:
        self._encode_queue.appendleft((lane, item, True))
        self._encode_queued_frames += item.num_frames

    def _retry_decode_alone(self, lane: Lane, works: list[Work]) -> None:
        for work in works:
            lane.ready[work.slice.seq] = work
        lane.solo = True
        self._mark_if_ready(lane)


class NotRun(Exception):
    """The outcome of a batch item the backend was never asked about: the worker's backend
    was given up (it could not be reset) after another item failed. The item runs again,
    alone, on another worker; it fails nothing."""


def slice_error(stage: str, item: AudioSlice, cause: BaseException) -> StreamFailedError:
    """The failure of ``item``'s stream when ``stage`` (encoding, decoding) of it raised."""
    error = StreamFailedError(
        f"stream {item.stream_id!r}: {stage} slice {item.seq} failed: {cause}",
        item.stream_id,
        item.seq,
    )
    error.__cause__ = cause
    return error
