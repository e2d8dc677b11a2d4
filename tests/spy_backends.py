"""Instrumented backends for tests: they run the real ONNX model and record or disturb calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import prevad_rx as pv
from prevad_rx.backends import DecodeRequest, ModelRequest, ModelResult
from prevad_rx.backends._onnx import OnnxBackend

POISON = 7.0  # a finite sample value no real audio here has: marks frames that must fail


@dataclass
class CallLog:
    """What the spies saw, shared by all workers' instances."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    encodes: list[tuple[str, int]] = field(default_factory=list)  # (thread, frames)
    decodes: list[tuple[str, int]] = field(default_factory=list)  # (thread, streams)
    processes: list[tuple[str, int]] = field(default_factory=list)
    created_on: list[str] = field(default_factory=list)
    initialized_on: list[str] = field(default_factory=list)
    closed_on: list[str] = field(default_factory=list)

    def add(self, kind: str, value: int) -> None:
        with self.lock:
            getattr(self, kind).append((threading.current_thread().name, value))


class SpyBackend(OnnxBackend):
    """The ONNX backend, logging each call and optionally gated or failing."""

    name = "spy"

    def __init__(
        self,
        log: CallLog,
        encode_gate: threading.Event | None = None,
        encode_barrier: threading.Barrier | None = None,
        fail_on: str | None = None,
        sleep_s: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.log = log
        self.encode_gate = encode_gate
        self.encode_barrier = encode_barrier
        self.fail_on = fail_on
        self.sleep_s = sleep_s
        log.created_on.append(threading.current_thread().name)

    def initialize(self) -> None:
        super().initialize()
        self.log.initialized_on.append(threading.current_thread().name)

    def close(self) -> None:
        self.log.closed_on.append(threading.current_thread().name)
        super().close()

    def _check(self, stage: str, windows: np.ndarray) -> None:
        if self.fail_on == stage and np.any(windows == POISON):
            raise RuntimeError(f"injected {stage} fault")

    def encode(self, windows: np.ndarray, sample_rate: int) -> np.ndarray:
        if self.encode_gate is not None:
            assert self.encode_gate.wait(30)
        if self.encode_barrier is not None:
            self.encode_barrier.wait(30)
        self._check("encode", windows)
        self.log.add("encodes", windows.shape[0])
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return super().encode(windows, sample_rate)

    def decode(self, requests: Sequence[DecodeRequest]) -> list[ModelResult]:
        self.log.add("decodes", len(requests))
        if self.fail_on == "decode" and any(np.any(r.features == -1.0) for r in requests):
            raise RuntimeError("injected decode fault")
        return super().decode(requests)

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        for request in requests:
            self._check("process", request.windows)
        self.log.add("processes", len(requests))
        return super().process(requests)


def make_spy(**options: Any) -> pv.Backend:
    return SpyBackend(**options)


#: Sample values that make :class:`FaultyBackend` misbehave on the frames holding them.
RAISE, HANG, NAN, WRONG_SHAPE, SLOW = 7.0, 8.0, 9.0, 10.0, 11.0
OUT_OF_RANGE, STATE_SHAPE, STATE_DTYPE, EXIT = 12.0, 13.0, 14.0, 15.0
_MARKERS = (RAISE, HANG, NAN, WRONG_SHAPE, SLOW, OUT_OF_RANGE, STATE_SHAPE, STATE_DTYPE, EXIT)


class FaultyBackend(OnnxBackend):
    """Runs every call through ``process`` (no encode split) and misbehaves on frames
    that hold a marker value: raise (``RAISE``; ``EXIT`` raises ``exit_with``, by default
    ``SystemExit``), hang until released, sleep, or return NaN, too few probabilities,
    probabilities above 1, or a state of the wrong shape or dtype. ``resets`` records the
    thread of each ``reset()``; with ``reset_fails`` it raises."""

    name = "faulty"

    def __init__(
        self,
        release: threading.Event | None = None,
        slow_s: float = 0.05,
        exit_with: type[BaseException] = SystemExit,
        resets: list[str] | None = None,
        reset_fails: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.release = release or threading.Event()
        self.slow_s = slow_s
        self.exit_with = exit_with
        self.resets = resets
        self.reset_fails = reset_fails

    def can_encode(self, sample_rate: int) -> bool:
        return False

    def reset(self) -> None:
        if self.resets is not None:
            self.resets.append(threading.current_thread().name)
        if self.reset_fails:
            raise RuntimeError("injected reset fault")

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        marked = {
            marker
            for request in requests
            for marker in _MARKERS
            if np.any(request.windows == marker)
        }
        if RAISE in marked:
            raise RuntimeError("injected fault")
        if EXIT in marked:
            raise self.exit_with("injected exit")
        if HANG in marked:
            self.release.wait(60)
        if SLOW in marked:
            time.sleep(self.slow_s)
        results = super().process(requests)
        out = []
        for request, result in zip(requests, results, strict=True):
            probabilities, state = result
            if np.any(request.windows == NAN):
                probabilities = np.full_like(probabilities, np.nan)
            if np.any(request.windows == WRONG_SHAPE):
                probabilities = probabilities[:-1]
            if np.any(request.windows == OUT_OF_RANGE):
                probabilities = probabilities * 5.04 + 1.0
            if np.any(request.windows == STATE_SHAPE):
                state = state.reshape(-1)
            if np.any(request.windows == STATE_DTYPE):
                state = state.astype(np.float64)
            out.append(ModelResult(probabilities, state))
        return out


def make_faulty(**options: Any) -> pv.Backend:
    return FaultyBackend(**options)


class SlowBackend(OnnxBackend):
    """The ONNX backend with a fixed delay per call: a producer can outrun it."""

    name = "slow"

    def __init__(
        self, delay_s: float = 0.005, gate: threading.Event | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.delay_s = delay_s
        self.gate = gate

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        if self.gate is not None:
            assert self.gate.wait(60)
        time.sleep(self.delay_s)
        return super().process(requests)

    def can_encode(self, sample_rate: int) -> bool:
        return False


def make_slow(**options: Any) -> pv.Backend:
    return SlowBackend(**options)


class Only16kBackend(OnnxBackend):
    """The ONNX backend declaring 16 kHz as its only processing rate."""

    name = "only16k"
    sample_rates = frozenset({16000})


def make_only16k(**options: Any) -> pv.Backend:
    return Only16kBackend(**options)


class GatedStartBackend(OnnxBackend):
    """The ONNX backend whose ``initialize`` waits for ``gate``: a pool that starts slowly."""

    name = "gated-start"

    def __init__(self, gate: threading.Event, started: threading.Event, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate
        self.started = started

    def initialize(self) -> None:
        self.started.set()
        assert self.gate.wait(60)
        super().initialize()


def make_gated_start(**options: Any) -> pv.Backend:
    return GatedStartBackend(**options)
