"""parallel_map_on_pool: exact results, parallel encoding, ordered recurrent decoding, batching."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
import reactivex as rx
from reactivex.subject import Subject

import prevad_rx as pv
from prevad_rx.backends import ModelRequest, ModelResult, _registry
from prevad_rx.backends._onnx import OnnxBackend
from prevad_rx.operators import parallel_map_on_pool, reorder_by_seq, window_slices
from tests.conftest import GoldenFixture, assert_silero_probabilities
from tests.operators.helpers import chunked, collect, interleave
from tests.spy_backends import HANG, POISON, RAISE, CallLog, FaultyBackend, make_faulty, make_spy


@pytest.fixture(autouse=True)
def spy_registered() -> Iterator[None]:
    pv.register_backend("spy", make_spy, replace=True)
    yield
    _registry._registered.pop("spy", None)


def probabilities_by_stream(out: list[object]) -> dict[str, np.ndarray]:
    result: dict[str, list[np.ndarray]] = {}
    for item in out:
        assert isinstance(item, pv.FrameProbabilities)
        result.setdefault(item.stream_id, []).append(item.probabilities)
    return {sid: np.concatenate(parts) for sid, parts in result.items()}


def test_many_interleaved_streams_are_exact(
    pool: pv.WorkerPool, all_fixtures: tuple[GoldenFixture, ...]
) -> None:
    rng = np.random.default_rng(5)
    streams = []
    expected = {}
    for k in range(12):
        fixture = all_fixtures[k % len(all_fixtures)]
        sid = f"s{k}"
        sizes = [int(s) for s in rng.integers(1, 20000, 5)]
        streams.append(chunked(sid, fixture.audio, sizes, fixture.sample_rate))
        expected[sid] = fixture
    out = collect(
        interleave(streams, rng), window_slices(9), parallel_map_on_pool(pool), reorder_by_seq()
    )
    got = probabilities_by_stream(out)
    for sid, fixture in expected.items():
        assert_silero_probabilities(got[sid], fixture)
    # results leave the model stage already in per-stream order
    for sid in expected:
        seqs = [o.seq for o in out if o.stream_id == sid]
        assert seqs == sorted(seqs)


def test_slices_of_one_stream_are_encoded_in_parallel(speech16k: GoldenFixture) -> None:
    """Two slices of the same chunk meet at a barrier inside encode: only possible if both
    workers run them at the same time."""
    log = CallLog()
    barrier = threading.Barrier(2)
    options = {"log": log, "encode_barrier": barrier}
    with pv.WorkerPool("spy", 2, backend_options=options) as pool:
        chunk = pv.AudioChunk("a", speech16k.audio[: 512 * 32])
        end = pv.AudioChunk("a", np.zeros(0, np.float32), end_of_stream=True)
        out = collect([chunk, end], window_slices(16), parallel_map_on_pool(pool))
    assert not barrier.broken
    assert {thread for thread, _ in log.encodes} == {"prevad-rx-0", "prevad-rx-1"}
    assert_silero_probabilities(probabilities_by_stream(out)["a"], speech16k, 32)


def test_live_packets_are_encoded_and_decoded_on_one_worker(speech16k: GoldenFixture) -> None:
    """A packet at a time (each waits for its result): its encoder and decoder calls run
    in one pool task, on the worker that took it: no second task that would hand the
    decoding over to the other worker."""
    log = CallLog()
    with pv.WorkerPool("spy", 2, backend_options={"log": log}) as pool:
        subject: Subject[pv.AudioChunk] = Subject()
        got = threading.Semaphore(0)
        out: list[object] = []

        def take(item: object) -> None:
            out.append(item)
            got.release()

        done = threading.Event()
        subject.pipe(window_slices(), parallel_map_on_pool(pool)).subscribe(
            take, on_completed=done.set
        )
        for k in range(20):
            subject.on_next(pv.AudioChunk("a", speech16k.audio[512 * k : 512 * (k + 1)]))
            assert got.acquire(timeout=30)
        deadline = time.monotonic() + 30  # the last task ends just after its result is out
        while pool.statistics().tasks_completed < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert pool.statistics().tasks_completed == 20  # one task per packet, not two
        subject.on_completed()
        assert done.wait(30)
    # 20 packets, and the empty last slice the completion ends the stream with (decoded only)
    assert len(log.encodes) == 20 and len(log.decodes) == 21
    for (encoded_on, _), (decoded_on, _) in zip(log.encodes, log.decodes[:20], strict=True):
        assert decoded_on == encoded_on
    assert_silero_probabilities(probabilities_by_stream(out)["a"], speech16k, 20)


def test_streams_ready_together_share_one_encoder_and_one_decoder_call(
    speech16k: GoldenFixture,
) -> None:
    log = CallLog()
    gate = threading.Event()
    with pv.WorkerPool("spy", 1, backend_options={"log": log}) as pool:
        pool.submit(lambda backend: gate.wait(30))  # hold the only worker
        items = [pv.AudioChunk(f"s{i}", speech16k.audio[: 512 * 4]) for i in range(10)]
        done = threading.Event()
        out: list[object] = []
        rx.from_iterable(items).pipe(window_slices(), parallel_map_on_pool(pool)).subscribe(
            out.append, on_completed=done.set
        )
        gate.set()  # every slice is queued before the worker encodes anything
        assert done.wait(30)
    assert log.encodes[0][1] == 10 * 4  # all ten streams in one encoder call
    assert log.decodes[0][1] == 10  # and in one decoder call
    got = probabilities_by_stream([o for o in out if o.num_frames])  # type: ignore[attr-defined]
    for i in range(10):
        assert_silero_probabilities(got[f"s{i}"], speech16k, 4)


def test_backends_are_created_initialized_and_closed_on_their_own_threads() -> None:
    log = CallLog()
    with pv.WorkerPool("spy", 3, backend_options={"log": log}):
        pass
    for calls in (log.created_on, log.initialized_on, log.closed_on):
        assert sorted(calls) == ["prevad-rx-0", "prevad-rx-1", "prevad-rx-2"]


@pytest.mark.parametrize("stage", ["encode", "process"])
def test_a_backend_fault_fails_only_the_affected_stream(
    stage: str, all_fixtures: tuple[GoldenFixture, ...]
) -> None:
    """A poisoned slice raises inside a batched call; the call is retried item by item so
    only its stream fails, and the workers keep serving."""
    log = CallLog()
    rate = 16000 if stage == "encode" else 8000
    fixture = next(f for f in all_fixtures if f.sample_rate == rate)
    bad_audio = fixture.audio.copy()
    bad_audio[5000] = POISON
    rng = np.random.default_rng(9)
    streams = [chunked("bad", bad_audio, [4000], rate)] + [
        chunked(f"ok{i}", fixture.audio, [int(rng.integers(500, 9000))], rate) for i in range(6)
    ]
    with pv.WorkerPool("spy", 2, backend_options={"log": log, "fail_on": stage}) as pool:
        out = collect(interleave(streams, rng), window_slices(4), parallel_map_on_pool(pool))
        stats = pool.statistics()
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert [f.stream_id for f in failures] == ["bad"]
    error = failures[0].error
    assert error.stream_id == "bad" and error.seq is not None
    assert f"injected {stage} fault" in str(error) and isinstance(error.__cause__, RuntimeError)
    # the bad stream's results stop at the failure; everything else is exact
    bad_items = [o for o in out if isinstance(o, pv.FrameProbabilities) and o.stream_id == "bad"]
    assert all(o.seq < error.seq for o in bad_items)
    assert out.index(failures[0]) > max((out.index(o) for o in bad_items), default=-1)
    got = probabilities_by_stream(
        [o for o in out if isinstance(o, pv.FrameProbabilities) and o.stream_id != "bad"]
    )
    for i in range(6):
        assert_silero_probabilities(got[f"ok{i}"], fixture)
    assert stats.task_errors == 0


def test_a_failure_of_the_last_work_is_emitted_before_completion(
    speech8k: GoldenFixture,
) -> None:
    """Everything is queued and the source has completed before the worker runs; the
    stream's one run then fails in the decoder: its failure still comes out, before
    on_completed (the stage must not finish while a failure is due)."""
    log = CallLog()
    gate = threading.Event()
    audio = speech8k.audio[:2048].copy()
    audio[300] = POISON
    with pv.WorkerPool("spy", 1, backend_options={"log": log, "fail_on": "process"}) as pool:
        pool.submit(lambda backend: gate.wait(30))  # hold the only worker
        done = threading.Event()
        out: list[object] = []
        chunks = [
            pv.AudioChunk("bad", audio, 8000),
            pv.AudioChunk("bad", np.zeros(0, np.float32), 8000, end_of_stream=True),
        ]
        rx.from_iterable(chunks).pipe(window_slices(), parallel_map_on_pool(pool)).subscribe(
            out.append, on_completed=done.set
        )
        gate.set()
        assert done.wait(30)
    assert [type(o).__name__ for o in out] == ["StreamFailure"]
    assert "injected process fault" in str(out[0].error)  # type: ignore[attr-defined]


def test_upstream_failures_pass_through_in_order(pool: pv.WorkerPool) -> None:
    failure = pv.StreamFailure("a", pv.StreamFailedError("upstream", "a"))
    out = collect([failure], parallel_map_on_pool(pool))
    assert out == [failure]


def test_stateless_map_failure_names_the_item(pool: pv.WorkerPool) -> None:
    def explode(item: pv.AudioSlice) -> pv.AudioSlice:
        raise ValueError("bad item")

    chunk = pv.AudioChunk("a", np.zeros(1024, np.float32))
    out = collect([chunk], window_slices(), parallel_map_on_pool(pool, explode))
    assert all(isinstance(o, pv.StreamFailure) for o in out)
    assert "mapping item 0 failed: bad item" in str(out[0].error)


def test_a_map_raising_system_exit_fails_its_item_and_the_operator_completes(
    pool: pv.WorkerPool,
) -> None:
    """SystemExit (or KeyboardInterrupt) from the mapped function still fails the item's
    stream, and the operator completes; the pool, which serves on, logs it."""

    def leave(item: pv.AudioSlice) -> pv.AudioSlice:
        if item.stream_id == "bad":
            raise SystemExit(3)
        return item

    chunks = [pv.AudioChunk(sid, np.zeros(1024, np.float32), 16000, True) for sid in "ab"]
    chunks.insert(1, pv.AudioChunk("bad", np.zeros(1024, np.float32), 16000, True))
    out = collect(chunks, window_slices(), parallel_map_on_pool(pool, leave), timeout=10)
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert [f.stream_id for f in failures] == ["bad"]
    assert isinstance(failures[0].error.__cause__, SystemExit)
    assert {o.stream_id for o in out if isinstance(o, pv.AudioSlice)} == {"a", "b"}


def test_stateless_map_failure_fails_its_stream_once_and_drops_the_rest(
    pool: pv.WorkerPool, speech16k: GoldenFixture
) -> None:
    def strict(item: pv.AudioSlice) -> pv.AudioSlice:
        if item.stream_id == "a" and item.seq == 1:
            raise asyncio.CancelledError("a BaseException")
        return item

    chunks = interleave(
        [
            chunked("a", speech16k.audio[:16000], [2048]),
            chunked("b", speech16k.audio[:16000], [2048]),
        ],
        np.random.default_rng(3),
    )
    out = collect(chunks, window_slices(4), parallel_map_on_pool(pool, strict), reorder_by_seq())
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert [f.stream_id for f in failures] == ["a"]
    assert isinstance(failures[0].error.__cause__, asyncio.CancelledError)
    a_items = [o.seq for o in out if isinstance(o, pv.AudioSlice) and o.stream_id == "a"]
    assert a_items in ([], [0])  # nothing of "a" after its failure
    b_items = [o.seq for o in out if isinstance(o, pv.AudioSlice) and o.stream_id == "b"]
    assert b_items == list(range(len(b_items))) and len(b_items) > 4


def test_max_pending_bounds_what_a_producer_can_queue(speech16k: GoldenFixture) -> None:
    """With a gate holding the only worker, the producer thread blocks at the bound."""
    log = CallLog()
    gate = threading.Event()
    with pv.WorkerPool("spy", 1, backend_options={"log": log, "encode_gate": gate}) as pool:
        chunks = chunked("a", speech16k.audio[: 512 * 20], [512])  # 20 one-frame slices
        submitted: list[int] = []
        done = threading.Event()
        source = rx.from_iterable(chunks).pipe(
            window_slices(), rx.operators.do_action(lambda s: submitted.append(s.seq))
        )
        thread = threading.Thread(
            target=lambda: source.pipe(parallel_map_on_pool(pool, max_pending=3)).subscribe(
                on_completed=done.set
            )
        )
        thread.start()
        thread.join(0.5)  # the producer is stuck on the bound, not finished
        assert thread.is_alive() and len(submitted) <= 3 + 1
        gate.set()
        thread.join(30)
        assert done.wait(30) and len(submitted) == 21


def test_slices_dropped_for_a_failed_stream_give_their_place_back() -> None:
    """Under max_pending, slices of a stream the stage has failed are dropped at once, and
    each gives its place in the bound back: the producer never blocks on them."""
    pv.register_backend("faulty", make_faulty, replace=True)
    try:
        with pv.WorkerPool("faulty", 1) as faulty:
            subject: Subject[pv.AudioChunk] = Subject()
            out: list[object] = []
            done = threading.Event()
            subject.pipe(window_slices(4), parallel_map_on_pool(faulty, max_pending=4)).subscribe(
                out.append, on_completed=done.set
            )
            bad = np.zeros(512 * 4, np.float32)
            bad[10] = RAISE
            subject.on_next(pv.AudioChunk("bad", bad))
            for _ in range(200):  # the stage fails "bad": its later slices are dropped
                if any(isinstance(o, pv.StreamFailure) for o in out):
                    break
                time.sleep(0.01)
            producer = threading.Thread(
                target=lambda: [
                    subject.on_next(pv.AudioChunk("bad", np.zeros(512 * 4, np.float32)))
                    for _ in range(8)  # twice the bound, all dropped
                ],
                daemon=True,
            )
            producer.start()
            producer.join(10)
            assert not producer.is_alive()
            good = pv.AudioChunk("good", np.zeros(512 * 4, np.float32), end_of_stream=True)
            subject.on_next(good)
            subject.on_completed()
            assert done.wait(30)
    finally:
        _registry._registered.pop("faulty", None)
    assert [o.stream_id for o in out if isinstance(o, pv.StreamFailure)] == ["bad"]
    assert {o.stream_id for o in out if isinstance(o, pv.FrameProbabilities)} == {"good"}


class _CancelledOnAbandon(FaultyBackend):
    """A faulty backend that cannot be reset and whose abandon() cancels its calls (as the
    vllm-api backend's does); it records each call made after its reset failed."""

    name = "cancelled-on-abandon"
    calls_after_failed_reset: ClassVar[list[int]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__(reset_fails=True, **options)
        self.reset_failed = False
        self.abandoned = False

    def reset(self) -> None:
        self.reset_failed = True
        super().reset()

    def abandon(self) -> None:
        self.abandoned = True

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        if self.reset_failed:
            self.calls_after_failed_reset.append(len(requests))
        if self.abandoned:
            raise RuntimeError("request cancelled: the worker was replaced")
        return super().process(requests)


def test_a_backend_that_cannot_be_reset_is_not_called_again_and_fails_only_the_culprit(
    speech16k: GoldenFixture,
) -> None:
    """Four streams in one call, one of them faulty, on a backend that cannot be reset:
    the worker is replaced and its backend is not called again; the others' slices run on
    the new worker (not failed by the given-up backend's cancelled calls), exactly."""
    pv.register_backend("cancelled-on-abandon", _CancelledOnAbandon, replace=True)
    _CancelledOnAbandon.calls_after_failed_reset.clear()
    audio = speech16k.audio[: 512 * 8]
    try:
        with pv.WorkerPool("cancelled-on-abandon", 1) as faulty:
            gate = threading.Event()
            faulty.submit(lambda backend: gate.wait(30))  # the four streams batch together
            chunks = []
            for index in range(4):
                samples = audio.copy()
                if index == 0:
                    samples[10] = RAISE
                chunks.append(pv.AudioChunk(f"s{index}", samples, 16000, True))
            out: list[object] = []
            done = threading.Event()
            rx.from_iterable(chunks).pipe(window_slices(), parallel_map_on_pool(faulty)).subscribe(
                out.append, on_completed=done.set
            )
            gate.set()
            assert done.wait(30)
            replaced = faulty.statistics().workers_replaced
    finally:
        _registry._registered.pop("cancelled-on-abandon", None)
    assert [o.stream_id for o in out if isinstance(o, pv.StreamFailure)] == ["s0"]
    probabilities = probabilities_by_stream(
        [o for o in out if isinstance(o, pv.FrameProbabilities)]
    )
    assert sorted(probabilities) == ["s1", "s2", "s3"]
    for sid in ("s2", "s3"):
        np.testing.assert_array_equal(probabilities[sid], probabilities["s1"])
    assert replaced >= 1 and _CancelledOnAbandon.calls_after_failed_reset == []


class _HangingEncoder(OnnxBackend):
    """The ONNX backend whose encoder hangs on frames holding ``HANG`` until released."""

    name = "hanging-encoder"
    release = threading.Event()

    def encode(self, windows: np.ndarray, sample_rate: int) -> np.ndarray:
        if np.any(windows == HANG):
            self.release.wait(30)
        return super().encode(windows, sample_rate)


def test_a_stage_stopped_while_its_call_hangs_still_gives_the_call_up() -> None:
    """On a shared pool: the subscriber goes away while its call hangs; the call is still
    given up at its deadline, so the pool gets a new worker and serves the next user; and
    a subscriber disposing from inside on_next, while a give-up waits to emit, does not
    deadlock the stage."""
    pv.register_backend("hanging-encoder", _HangingEncoder, replace=True)
    _HangingEncoder.release.clear()
    hung = np.zeros(512, np.float32)
    hung[5] = HANG
    try:
        with pv.WorkerPool("hanging-encoder", 2) as shared:
            first: Subject[pv.AudioChunk] = Subject()
            holder: dict[str, Any] = {}
            disposed = threading.Event()

            def on_next(item: object) -> None:
                if getattr(item, "stream_id", "") == "slow-reader" and not disposed.is_set():
                    time.sleep(0.6)  # the hung call's deadline passes meanwhile
                    holder["subscription"].dispose()  # then it stops listening
                    disposed.set()

            holder["subscription"] = first.pipe(
                window_slices(),
                parallel_map_on_pool(shared, slice_timeout_factor=0.01, min_slice_timeout=0.3),
            ).subscribe(on_next)
            first.on_next(pv.AudioChunk("slow-reader", np.zeros(256, np.float32), 8000))
            time.sleep(0.05)
            first.on_next(pv.AudioChunk("hung", hung))
            assert disposed.wait(10)  # no deadlock between dispose and the give-up
            for _ in range(200):
                if shared.statistics().workers_replaced:
                    break
                time.sleep(0.02)
            assert shared.statistics().workers_replaced == 1
            second = collect(
                [pv.AudioChunk("next", np.zeros(1024, np.float32), 16000, True)],
                window_slices(),
                parallel_map_on_pool(shared),
                timeout=10,
            )
            assert [type(o).__name__ for o in second] == ["FrameProbabilities"]
            _HangingEncoder.release.set()  # the given-up call returns; its thread ends
    finally:
        _HangingEncoder.release.set()
        _registry._registered.pop("hanging-encoder", None)


def test_bad_arguments(pool: pv.WorkerPool) -> None:
    with pytest.raises(TypeError):
        parallel_map_on_pool("pool")  # type: ignore[arg-type]
    with pytest.raises(pv.ConfigError):
        parallel_map_on_pool(pool, max_pending=0)
    with pytest.raises(pv.ConfigError):
        parallel_map_on_pool(pool, max_batch_frames=0)
    with pytest.raises(TypeError, match="AudioSlice"):
        collect(["x"], parallel_map_on_pool(pool))


def test_a_failure_of_the_last_work_in_flight_still_comes_out(speech16k: GoldenFixture) -> None:
    """The source completes while the stream's last slice is still being encoded, and that
    encode fails: the chain must emit the stream's failure before it completes."""
    audio = speech16k.audio[: 512 * 8].copy()
    audio[512 * 6 + 3] = POISON
    options = {"log": CallLog(), "fail_on": "encode"}
    with pv.WorkerPool("spy", 1, backend_options=options) as pool:
        out = collect(
            [pv.AudioChunk("a", audio, end_of_stream=True)],
            window_slices(4),
            parallel_map_on_pool(pool),
            reorder_by_seq(),
        )
    failures = [item for item in out if isinstance(item, pv.StreamFailure)]
    assert len(failures) == 1 and failures[0].stream_id == "a"
    assert "encoding slice 1 failed" in str(failures[0].error)
