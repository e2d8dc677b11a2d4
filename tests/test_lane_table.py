"""LaneTable: the model stage's bookkeeping, driven step by step without threads or a backend."""

from __future__ import annotations

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx._lanes import DecodeBatch, EncodeBatch, Followup, Lane, LaneTable
from prevad_rx.backends import ModelResult

STATE = np.zeros((2, 1, 128), np.float32)
FEATURES_DIM = 4


def make_table(
    workers: int = 1,
    max_batch_frames: int = 512,
    *,
    min_encode_frames: int = 1,
    min_decode_lanes: int = 1,
) -> tuple[LaneTable, list[int]]:
    """A table; by default any queued work may wake another worker (units of 1)."""
    released: list[int] = []
    table = LaneTable(
        initial_state=STATE,
        encodable={16000: True, 8000: False},
        workers=workers,
        max_batch_frames=max_batch_frames,
        min_encode_frames=min_encode_frames,
        min_decode_lanes=min_decode_lanes,
        on_release=released.append,
    )
    return table, released


def piece(
    sid: str, seq: int, frames: int = 2, *, last: bool = False, rate: int = 16000
) -> pv.AudioSlice:
    frame, context = (512, 64) if rate == 16000 else (256, 32)
    return pv.AudioSlice(
        stream_id=sid,
        seq=seq,
        start_frame=seq * frames,
        num_frames=frames,
        buffer=np.zeros(context + frames * frame, np.float32),
        sample_rate=rate,
        end_sample=(seq + 1) * frames * frame,
        is_last=last,
    )


def features(batch: EncodeBatch) -> list[np.ndarray]:
    return [np.full((item.num_frames, FEATURES_DIM), item.seq, np.float32) for item in batch.slices]


def result_for(works_frames: int, value: float) -> ModelResult:
    return ModelResult(np.full(works_frames, 0.5, np.float32), np.full_like(STATE, value))


def run_ids(batch: DecodeBatch) -> list[tuple[str, list[int]]]:
    return [(lane.stream_id, [w.slice.seq for w in works]) for lane, works in batch.runs]


def encode_all(table: LaneTable) -> None:
    while (batch := table.next_encode_batch()) is not None:
        table.encoded(batch, features(batch))


def decode_and_emit(table: LaneTable, batch: DecodeBatch, value: float = 1.0) -> Followup:
    """Run a decode batch to completion as the stage does: advance every run, then
    release them all at once as emitted."""
    table.decoded(batch)
    emitted = []
    for lane, works in batch.runs:
        frames = sum(w.slice.num_frames for w in works)
        table.run_decoded(lane, works, result_for(frames, value))
        emitted.append((lane, works, frames))
    return table.runs_emitted(emitted)


def test_an_encode_batch_takes_its_share_of_the_queue_in_arrival_order() -> None:
    table, _ = make_table(workers=2)
    assert table.submit(piece("a", 0)) == (1, 0)  # one task per worker at most
    assert table.submit(piece("b", 0)) == (1, 0)
    assert table.submit(piece("a", 1)) == (0, 0)
    assert table.submit(piece("b", 1)) == (0, 0)
    # 2 workers: a batch takes half of what is queued (oldest first, any streams together)
    batches = [table.next_encode_batch() for _ in range(3)]
    assert [[(s.stream_id, s.seq) for s in b.slices] for b in batches if b is not None] == [
        [("a", 0), ("b", 0)],  # 4 of 8 frames
        [("a", 1)],  # 2 of 4
        [("b", 1)],  # always at least one slice
    ]
    assert table.next_encode_batch() is None  # the asking task ends: its slot is free
    assert table.encoding.running == 1


def test_another_encode_task_starts_only_for_min_encode_frames_more_frames() -> None:
    table, _ = make_table(workers=4, min_encode_frames=8)
    assert table.submit(piece("a", 0, frames=2)) == (1, 0)
    for sid in "bcd":  # 8 frames queued: still one task's work
        assert table.submit(piece(sid, 0, frames=2)) == (0, 0)
    assert table.submit(piece("e", 0, frames=2)) == (1, 0)  # 10 frames: a second task
    batch = table.next_encode_batch()  # takes at least 8 frames, not a quarter of the queue
    assert batch is not None and batch.frames == 8
    assert [s.stream_id for s in table.next_encode_batch().slices] == ["e"]  # type: ignore[union-attr]


def test_many_queued_frames_still_wake_every_worker() -> None:
    table, _ = make_table(workers=2, min_encode_frames=8)
    table.submit(piece("a", 0, frames=32))  # one 2 s chunk's first slice: a worker of its own
    assert table.submit(piece("a", 1, frames=30)) == (1, 0)
    first, second = table.next_encode_batch(), table.next_encode_batch()
    assert first is not None and second is not None
    assert [first.frames, second.frames] == [32, 30]  # the two slices encode in parallel


def test_another_decode_task_starts_only_for_min_decode_lanes_more_lanes() -> None:
    table, _ = make_table(workers=2, min_decode_lanes=3)
    for sid in "abc":
        table.submit(piece(sid, 0))
    encode_all(table)
    assert table.decoding.running == 1  # three ready lanes: one decode task
    batch = table.next_decode_batch()
    assert batch is not None and len(batch) == 3  # it takes them all in one call
    table.submit(piece("d", 0))
    table.submit(piece("e", 0))
    encode_all(table)
    assert table.decoding.running == 1  # two more: below the unit, the running task takes them


def test_an_encode_batch_stops_at_max_batch_frames() -> None:
    table, _ = make_table(workers=1, max_batch_frames=5)
    for seq in range(3):
        table.submit(piece("a", seq, frames=2))
    batch = table.next_encode_batch()
    assert batch is not None and [s.seq for s in batch.slices] == [0, 1]
    assert table.statistics().queued_encode_slices == 1


def test_decoding_waits_for_the_next_seq_and_joins_consecutive_slices() -> None:
    table, released = make_table(workers=2, max_batch_frames=4)
    table.submit(piece("a", 0, frames=3))
    table.submit(piece("a", 1, frames=3))
    batch0 = table.next_encode_batch()  # two encode tasks, one slice each
    batch1 = table.next_encode_batch()
    assert batch0 is not None and batch1 is not None
    later = table.encoded(batch1, features(batch1))  # slice 1 encoded before slice 0
    assert later.decode == 0 and table.statistics().encoded_waiting_slices == 1
    sooner = table.encoded(batch0, features(batch0))
    assert sooner.decode == 1
    runs = table.next_decode_batch()
    assert runs is not None and run_ids(runs) == [("a", [0, 1])]
    ((lane, _),) = runs.runs
    assert table.statistics().decoding_streams == 1  # the lane is held
    emitted = decode_and_emit(table, runs)
    assert released == [2] and not lane.busy
    assert emitted == Followup([], 0, 0, done=False, again=False)
    stats = table.statistics()
    assert (stats.frames_processed, stats.in_flight_slices, stats.decode_calls) == (6, 0, 1)


def test_lanes_ready_together_share_one_decode_batch() -> None:
    table, _ = make_table(workers=1)
    for sid in ("a", "b", "c"):
        table.submit(piece(sid, 0))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    assert run_ids(batch) == [("a", [0]), ("b", [0]), ("c", [0])]
    decode_and_emit(table, batch)
    assert table.statistics().mean_streams_per_decode == 3


def test_with_more_workers_ready_lanes_are_spread_over_decode_tasks() -> None:
    table, _ = make_table(workers=2)
    for sid in ("a", "b", "c", "d"):
        table.submit(piece(sid, 0))
    encode_all(table)
    first, second = table.next_decode_batch(), table.next_decode_batch()
    assert first is not None and second is not None
    assert run_ids(first) == [("a", [0]), ("b", [0])]  # half of the 4 ready lanes
    assert run_ids(second) == [("c", [0])]  # half of the 2 left


def test_slices_that_cannot_be_encoded_go_straight_to_decoding() -> None:
    table, _ = make_table()
    # 8 kHz has no encoder here; an empty last slice has nothing to encode
    assert table.submit(piece("slow", 0, rate=8000)) == (0, 1)
    assert table.submit(piece("a", 0, frames=0, last=True)) == (0, 0)  # one decode task runs
    batch = table.next_decode_batch()
    assert batch is not None and run_ids(batch) == [("slow", [0]), ("a", [0])]
    (_, slow), (_, empty) = batch.runs
    assert slow[0].features is None  # decoded from its audio (Backend.process)
    assert empty[0].features is not None and empty[0].features.shape == (0, 0)


def test_a_reused_stream_id_waits_for_the_previous_generation() -> None:
    table, released = make_table(workers=1)
    table.submit(piece("a", 0, last=True))
    table.submit(piece("a", 0, last=True))  # the id, reopened
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    ((old, _),) = batch.runs  # the new lane waits, although its slice is encoded
    decode_and_emit(table, batch, value=3.0)
    assert old.gone and table.decode_task_step().again  # its successor is let go
    batch = table.next_decode_batch()
    assert batch is not None
    ((new, _),) = batch.runs
    assert new is not old and new.stream_id == "a"
    np.testing.assert_array_equal(new.state, STATE)  # a fresh state, not the old stream's
    decode_and_emit(table, batch)
    assert released == [1, 1] and table.statistics().streams == 0


def test_a_reused_stream_id_waits_while_the_previous_generation_emits_its_last() -> None:
    """The id comes back between the decoding of the old generation's last run and its
    emission: the new lane still waits for the old one's results to be out."""
    table, _ = make_table(workers=2)
    table.submit(piece("a", 0, last=True))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    ((old, works),) = batch.runs
    table.decoded(batch)
    table.run_decoded(old, works, result_for(2, 3.0))  # decoded, not yet emitted
    table.submit(piece("a", 0, last=True))  # the id, reopened now
    encode_all(table)
    assert table.next_decode_batch() is None  # the new lane waits for the emission
    followup = table.runs_emitted([(old, works, 2)])
    assert followup.decode == 1 or table.decode_task_step().again
    batch = table.next_decode_batch()
    assert batch is not None
    ((new, _),) = batch.runs
    assert new is not old and new.stream_id == "a"


def test_a_failed_stream_is_flushed_and_its_slices_dropped_up_to_its_last() -> None:
    table, released = make_table(workers=1)
    table.submit(piece("a", 0))
    table.submit(piece("b", 0))
    table.submit(piece("a", 1))
    batch = table.next_encode_batch()
    assert batch is not None
    outcomes: list[np.ndarray | BaseException] = list(features(batch))
    outcomes[0] = RuntimeError("bad audio")
    followup = table.encoded(batch, outcomes)
    (lane,) = followup.flush
    assert lane.stream_id == "a"
    error = table.begin_flush(lane)
    assert isinstance(error, pv.StreamFailedError)
    assert "encoding slice 0 failed: bad audio" in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    assert released == []  # the slices leave only once the failure is out
    assert table.begin_flush(lane) is None  # flushed once
    assert not table.end_flush(lane).done
    assert released == [2]  # both of a's slices left the stage
    assert table.submit(piece("a", 2)) == (0, 0)  # dropped
    assert table.submit(piece("a", 3, last=True)) == (0, 0)  # dropped, and the dropping ends
    table.submit(piece("a", 0))  # the id starts afresh
    stats = table.statistics()
    assert (stats.failed_streams, stats.in_flight_slices, stats.streams) == (1, 2, 2)


def test_a_failed_stream_leaves_the_encode_queue_at_once() -> None:
    table, released = make_table(workers=1, max_batch_frames=2)
    for seq in range(3):
        table.submit(piece("a", seq))
    table.submit(piece("b", 0))
    batch = table.next_encode_batch()
    assert batch is not None and [s.seq for s in batch.slices] == [0]
    (lane,) = table.encoded(batch, [RuntimeError("bad")]).flush
    assert table.begin_flush(lane) is not None
    assert table.statistics().queued_encode_slices == 1  # only b's
    table.end_flush(lane)
    assert released == [3]
    rest = table.next_encode_batch()
    assert rest is not None and [s.stream_id for s in rest.slices] == ["b"]


def test_a_decode_batch_is_released_at_once_and_failures_wait_for_their_flush() -> None:
    """The runs of one batch leave together: one release of all their slices (the
    admission bound is told once), except a failed lane's, which leave with its failure."""
    table, released = make_table(workers=1)
    for sid in ("a", "b", "c"):
        table.submit(piece(sid, 0))
        table.submit(piece(sid, 1))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None and run_ids(batch) == [(s, [0, 1]) for s in ("a", "b", "c")]
    b = batch.runs[1][0]
    table.fail(pv.StreamFailure("b", pv.StreamFailedError("upstream", "b")))
    followup = decode_and_emit(table, batch)
    assert released == [4]  # a's and c's two slices each, in one report
    assert followup.flush == [b]
    assert table.statistics().frames_processed == 12
    assert table.begin_flush(b) is not None
    table.end_flush(b)
    assert released == [4, 2]


def test_a_failure_waits_until_the_lane_is_no_longer_held() -> None:
    table, released = make_table(workers=1)
    table.submit(piece("a", 0))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    ((lane, works),) = batch.runs
    lane_again = table.fail(pv.StreamFailure("a", pv.StreamFailedError("upstream", "a")))
    assert lane_again is lane
    assert table.begin_flush(lane) is None  # a worker holds the lane
    table.run_decoded(lane, works, result_for(2, 1.0))
    followup = table.runs_emitted([(lane, works, 2)])
    assert followup.flush == [lane]  # now it can be flushed, after the emitted run
    error = table.begin_flush(lane)
    assert error is not None and str(error) == "upstream"
    table.end_flush(lane)
    assert released == [1]


def test_a_failed_run_fails_its_stream_only() -> None:
    table, released = make_table(workers=1)
    table.submit(piece("a", 0))
    table.submit(piece("b", 0))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    (a, a_works), (b, b_works) = batch.runs
    followup = table.run_failed(a, a_works, ValueError("boom"))
    assert followup.flush == [a] and a.error is not None
    assert "decoding slice 0 failed: boom" in str(a.error)
    table.run_decoded(b, b_works, result_for(2, 1.0))
    table.runs_emitted([(b, b_works, 2)])
    assert b.error is None and released == [1]  # a's slice leaves with its failure
    assert table.begin_flush(a) is not None
    table.end_flush(a)
    assert released == [1, 1]


def test_a_failed_last_run_keeps_the_stage_open_until_its_failure_is_out() -> None:
    """The source has completed and the stream's last run fails in the decoder: the stage
    must not finish before that failure is emitted (else it would be dropped)."""
    table, released = make_table(workers=1)
    table.submit(piece("a", 0, rate=8000, last=True))
    assert not table.complete()
    batch = table.next_decode_batch()
    assert batch is not None
    ((lane, works),) = batch.runs
    followup = table.run_failed(lane, works, ValueError("boom"))
    assert followup.flush == [lane] and not followup.done and not table.terminated
    assert released == []  # its slice leaves with the failure, not before
    assert table.begin_flush(lane) is not None
    assert table.end_flush(lane).done and table.terminated
    assert released == [1]


def test_a_timed_out_batch_of_several_streams_retries_each_alone() -> None:
    table, _ = make_table(workers=1)
    table.submit(piece("a", 0))
    table.submit(piece("b", 0))
    batch = table.next_encode_batch()
    assert batch is not None and len(batch) == 2
    followup = table.timed_out(batch, 2.0)
    assert followup.flush == [] and followup.encode == 1  # its task slot was given back
    table.submit(piece("c", 0))
    alone = []
    while (encode := table.next_encode_batch()) is not None:
        alone.append([s.stream_id for s in encode.slices])
        table.encoded(encode, features(encode))
    assert alone == [["a"], ["b"], ["c"]]  # c, queued later, is not batched with a retry
    decode = table.next_decode_batch()
    assert decode is not None and len(decode) == 3
    table.submit(piece("d", 0))
    encode_all(table)  # d gets ready while the call hangs
    table.timed_out(decode, 2.0)
    assert all(not lane.busy and lane.solo for lane, _ in decode.runs)
    table.submit(piece("e", 0))
    encode_all(table)  # e gets ready after it
    batches = []
    while (retry := table.next_decode_batch()) is not None:
        batches.append([sid for sid, _ in run_ids(retry)])
        decode_and_emit(table, retry)
        assert not retry.runs[0][0].solo  # it succeeded: batched again from now on
    # neither d (ready before the retries) nor e (after) shares a call with a retry
    assert batches == [["d"], ["c"], ["b"], ["a"], ["e"]]
    assert table.statistics().timed_out_calls == 2


def test_a_timed_out_call_of_one_stream_fails_it() -> None:
    table, released = make_table(workers=1)
    table.submit(piece("a", 0))
    table.submit(piece("a", 1))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    followup = table.timed_out(batch, 2.5)
    (lane,) = followup.flush
    assert isinstance(lane.error, pv.SliceTimeoutError)
    assert str(lane.error) == "stream 'a': decode of slice 0 did not finish within 2.5 s"
    assert table.begin_flush(lane) is not None
    table.end_flush(lane)
    assert released == [2]


def test_a_lane_that_failed_while_its_call_hung_is_flushed_when_the_call_times_out() -> None:
    """A stream fails upstream while its decode call hangs: its failure waits for the lane
    to be let go, and the timeout lets it go, so the timeout must flush it (with its own
    error, not a timeout)."""
    table, released = make_table(workers=1)
    table.submit(piece("a", 0))
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    ((lane, _),) = batch.runs
    assert table.fail(pv.StreamFailure("a", pv.StreamFailedError("upstream", "a"))) is lane
    assert table.begin_flush(lane) is None  # held by the hung call
    followup = table.timed_out(batch, 2.0)
    assert followup.flush == [lane]
    error = table.begin_flush(lane)
    assert error is not None and str(error) == "upstream"
    table.end_flush(lane)
    assert released == [1]


def test_the_stage_ends_only_after_its_last_failure_is_out() -> None:
    """The last work in flight fails after complete(): the stage is done only once that
    failure has been emitted, so an owner that stops emitting when done never loses it."""
    table, released = make_table(workers=1)
    table.submit(piece("a", 0, last=True))
    assert not table.complete()
    batch = table.next_encode_batch()
    assert batch is not None
    (lane,) = table.encoded(batch, [RuntimeError("bad")]).flush
    assert table.begin_flush(lane) is not None
    assert not table.terminated  # still owed: the failure
    assert table.end_flush(lane).done and table.terminated
    assert released == [1]


def test_complete_is_done_once_the_last_slice_leaves() -> None:
    table, _ = make_table()
    assert table.complete() and table.terminated  # nothing in flight: done at once
    table, _ = make_table()
    table.submit(piece("a", 0, last=True))
    assert not table.complete()
    encode_all(table)
    batch = table.next_decode_batch()
    assert batch is not None
    followup = decode_and_emit(table, batch)
    assert followup.done and table.terminated
    assert table.submit(piece("b", 0)) == (0, 0)  # terminated: nothing more is taken


def test_terminate_drops_everything_queued() -> None:
    table, _ = make_table()
    table.submit(piece("a", 0))
    table.terminate()
    assert table.next_encode_batch() is None
    assert table.fail(pv.StreamFailure("a", pv.StreamFailedError("x", "a"))) is None
    assert table.statistics().streams == 0


@pytest.mark.parametrize("workers", [1, 3])
def test_task_slots_never_exceed_the_workers(workers: int) -> None:
    table, _ = make_table(workers=workers)
    started = sum(table.submit(piece(f"s{k}", 0))[0] for k in range(10))
    assert started == workers == table.encoding.running


def test_fail_all_fails_every_lane() -> None:
    table, _ = make_table()
    table.submit(piece("a", 0))
    table.submit(piece("b", 0))
    lanes: list[Lane] = table.fail_all(pv.ClosedError("pool closed"))
    assert [str(lane.error) for lane in lanes] == [
        "stream 'a' stopped: pool closed",
        "stream 'b' stopped: pool closed",
    ]
