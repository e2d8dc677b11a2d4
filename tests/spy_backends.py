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


class FaultyBackend(OnnxBackend):
    """Runs every call through ``process`` (no encode split) and misbehaves on frames
    that hold a marker value: raise, hang until released, return NaN, return the wrong
    number of probabilities, or sleep."""

    name = "faulty"

    def __init__(
        self, release: threading.Event | None = None, slow_s: float = 0.05, **options: Any
    ) -> None:
        super().__init__(**options)
        self.release = release or threading.Event()
        self.slow_s = slow_s

    def can_encode(self, sample_rate: int) -> bool:
        return False

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        marked = {
            marker
            for request in requests
            for marker in (RAISE, HANG, NAN, WRONG_SHAPE, SLOW)
            if np.any(request.windows == marker)
        }
        if RAISE in marked:
            raise RuntimeError("injected fault")
        if HANG in marked:
            self.release.wait(60)
        if SLOW in marked:
            time.sleep(self.slow_s)
        results = super().process(requests)
        out = []
        for request, result in zip(requests, results, strict=True):
            if np.any(request.windows == NAN):
                result = ModelResult(np.full_like(result.probabilities, np.nan), result.state)
            if np.any(request.windows == WRONG_SHAPE):
                result = ModelResult(result.probabilities[:-1], result.state)
            out.append(result)
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
