"""Shared fixtures: speech audio, silero-vad goldens, event loops, worker pools."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import prevad_rx as pv

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

#: Every async test runs on both loops: asyncio's own and uvloop.
LOOPS = [
    pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def decode_f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()


@dataclass(frozen=True)
class GoldenFixture:
    """A speech fixture with silero-vad's probabilities and timestamps for it."""

    file: str
    audio: np.ndarray
    sample_rate: int
    probabilities: np.ndarray
    timestamps: list[tuple[dict[str, Any], list[list[int]]]]

    @property
    def default_segments(self) -> list[list[int]]:
        return self.timestamps[0][1]


@cache
def golden_fixtures() -> tuple[GoldenFixture, ...]:
    data = json.loads((GOLDEN / "fixtures.json").read_text())
    out = []
    for entry in data["fixtures"]:
        audio, rate = sf.read(ROOT / entry["file"], dtype="float32")
        assert rate == entry["sample_rate"] and audio.size == entry["num_samples"]
        out.append(
            GoldenFixture(
                file=entry["file"],
                audio=audio,
                sample_rate=rate,
                probabilities=decode_f32(entry["probabilities"]),
                timestamps=[(t["params"], t["segments"]) for t in entry["timestamps"]],
            )
        )
    return tuple(out)


@cache
def _silero_on_this_cpu(file: str) -> np.ndarray:
    """silero-vad's own way, run here: the original streaming graph, one ORT call per
    frame with state and context carried (``OnnxWrapper``), single-threaded."""
    import onnxruntime as ort

    from prevad_rx.backends import model_path

    fixture = next(f for f in golden_fixtures() if f.file == file)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path("streaming")), sess_options=options, providers=["CPUExecutionProvider"]
    )
    frame, context = (512, 64) if fixture.sample_rate == 16000 else (256, 32)
    n = -(-fixture.audio.size // frame)
    buffer = np.zeros(context + n * frame, np.float32)
    buffer[context : context + fixture.audio.size] = fixture.audio
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(fixture.sample_rate, np.int64)
    out = np.empty(n, np.float32)
    for i in range(n):
        row = buffer[i * frame : i * frame + context + frame][None, :]
        probability, state = session.run(None, {"input": row, "state": state, "sr": rate})
        out[i] = probability[0, 0]
    return out


def assert_silero_probabilities(
    actual: np.ndarray | None, fixture: GoldenFixture, frames: int | None = None
) -> None:
    """``actual`` is bit for bit what silero-vad's own model computes on this CPU (for the
    first ``frames`` frames), and within 1e-5 of the golden file (made on another machine,
    whose ONNX Runtime kernels may round differently)."""
    assert actual is not None
    here = _silero_on_this_cpu(fixture.file)[:frames]
    np.testing.assert_array_equal(actual, here)
    np.testing.assert_allclose(actual, fixture.probabilities[:frames], rtol=0, atol=1e-5)


@cache
def segmenter_cases() -> list[dict[str, Any]]:
    data = json.loads((GOLDEN / "segmenter_cases.json").read_text())
    cases: list[dict[str, Any]] = data["cases"]
    for case in cases:
        case["probs"] = decode_f32(case["probabilities"])
    return cases


@pytest.fixture(scope="session")
def fixtures16k() -> tuple[GoldenFixture, ...]:
    return tuple(f for f in golden_fixtures() if f.sample_rate == 16000)


@pytest.fixture(scope="session")
def all_fixtures() -> tuple[GoldenFixture, ...]:
    return golden_fixtures()


@pytest.fixture(scope="session")
def speech16k() -> GoldenFixture:
    return next(f for f in golden_fixtures() if f.file.endswith("speech_16k.wav"))


@pytest.fixture(scope="session")
def speech8k() -> GoldenFixture:
    return next(f for f in golden_fixtures() if f.sample_rate == 8000)


@pytest.fixture(scope="module")
def pool() -> Iterator[pv.WorkerPool]:
    with pv.WorkerPool("onnx", num_workers=2) as shared:
        yield shared


def segments_as_lists(segments: Any) -> list[list[int]]:
    return [[s.start_sample, s.end_sample] for s in segments]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must end with the threads it started ended (pools closed)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and t.name.startswith("prevad-rx")
    ]
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which encoder path this machine runs (it depends on the CPU and onnxruntime)."""
    from prevad_rx._cpu import cpu_model, vector_extensions

    backend = pv.create_backend("onnx")
    backend.initialize()
    verdict = backend.encoder_verdict  # type: ignore[attr-defined]
    backend.close()
    return [
        f"prevad_rx: CPU {cpu_model()} ({', '.join(vector_extensions()) or 'no known extensions'})",
        f"prevad_rx: {verdict.path} encoder: {verdict.reason}",
    ]
