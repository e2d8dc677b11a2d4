"""Produce the golden results the exactness tests compare against, with upstream silero-vad.

silero-vad hard-depends on torch, so this runs in its own environment, never in
the library's: ``make goldens`` builds ``.venv-golden`` (Python 3.11, torch
2.13.0 CPU, silero-vad 6.2.3) and runs

    .venv-golden/bin/python scripts/make_goldens.py

It writes, under ``tests/golden/``:

* ``fixtures.json`` -- for every speech fixture: silero's per-frame
  probabilities (its ONNX model, frame by frame with carried state, as
  ``get_speech_timestamps`` computes them) and ``get_speech_timestamps``
  results for several parameter sets;
* ``segmenter_cases.json`` -- seeded random probability sequences built to
  hit the state machine's corners (values on and around the thresholds,
  max-speech splits, short blips), with ``get_speech_timestamps_from_probs``
  results.

Float32 arrays are stored as base64 of their little-endian bytes, so the tests
see exactly the values silero saw.
"""

from __future__ import annotations

import base64
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from silero_vad import __version__ as silero_version
from silero_vad import get_speech_timestamps, get_speech_timestamps_from_probs, load_silero_vad

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden"

FIXTURES = [
    "tests/fixtures/speech_16k.wav",
    "tests/fixtures/speech_noisy_16k.wav",
    "tests/fixtures/speech_8k.wav",
    "examples/audio/conversation.wav",
]

PARAMETER_SETS: list[dict[str, Any]] = [
    {},
    {"threshold": 0.3},
    {"threshold": 0.7, "neg_threshold": 0.6},
    {"min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"min_speech_duration_ms": 50, "speech_pad_ms": 0, "min_silence_duration_ms": 20},
    {"max_speech_duration_s": 1.5},
    {"max_speech_duration_s": 1.2, "use_max_poss_sil_at_max_speech": False},
    {"speech_pad_ms": 200, "min_silence_duration_ms": 150},
]


def encode_f32(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def fixture_goldens() -> list[dict[str, Any]]:
    model = load_silero_vad(onnx=True)
    results = []
    for rel in FIXTURES:
        audio, rate = sf.read(ROOT / rel, dtype="float32")
        tensor = torch.from_numpy(audio)
        probs = model.audio_forward(tensor, rate).numpy().reshape(-1).astype(np.float32)
        timestamps = []
        for params in PARAMETER_SETS:
            ts = get_speech_timestamps(tensor, model, sampling_rate=rate, **params)
            timestamps.append({"params": params, "segments": [[s["start"], s["end"]] for s in ts]})
        results.append(
            {
                "file": rel,
                "sample_rate": rate,
                "num_samples": int(audio.size),
                "probabilities": encode_f32(probs),
                "timestamps": timestamps,
            }
        )
        print(f"{rel}: {probs.size} frames, {len(timestamps[0]['segments'])} default segments")
    return results


def random_probabilities(rng: np.random.Generator, n: int) -> np.ndarray:
    """A two-state process with random dwell times and values that often sit on thresholds."""
    out = np.empty(n, dtype=np.float32)
    speech = bool(rng.random() < 0.5)
    i = 0
    edge_values = np.array(
        [0.5, 0.35, 0.3, 0.7, 0.6, 0.01, 0.15, 0.2, 0.45, 0.55], dtype=np.float32
    )
    while i < n:
        dwell = int(rng.geometric(1.0 / rng.choice([2, 5, 12, 40, 120])))
        dwell = max(1, min(dwell, n - i))
        low, high = (0.4, 1.0) if speech else (0.0, 0.6)
        values = rng.uniform(low, high, dwell)
        mask = rng.random(dwell) < 0.15
        values[mask] = rng.choice(edge_values, int(mask.sum()))
        nudge = rng.random(dwell) < 0.05
        values[nudge] = np.nextafter(
            values[nudge].astype(np.float32), np.float32(rng.choice([0.0, 1.0]))
        )
        out[i : i + dwell] = values
        i += dwell
        speech = not speech
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_config(rng: np.random.Generator) -> dict[str, Any]:
    config: dict[str, Any] = {
        "threshold": float(rng.choice([0.5, 0.5, 0.3, 0.45, 0.6, 0.7])),
        "min_speech_duration_ms": int(rng.choice([0, 32, 64, 100, 250, 250, 500])),
        "min_silence_duration_ms": int(rng.choice([0, 20, 64, 100, 100, 300])),
        "speech_pad_ms": int(rng.choice([0, 10, 30, 30, 64, 100, 300])),
    }
    if rng.random() < 0.3:
        config["neg_threshold"] = float(
            rng.choice([0.01, 0.2, 0.35, config["threshold"] - 0.05, config["threshold"]])
        )
    if rng.random() < 0.35:
        config["max_speech_duration_s"] = float(rng.choice([0.1, 0.5, 1.0, 1.5, 3.0]))
        config["use_max_poss_sil_at_max_speech"] = bool(rng.random() < 0.5)
        config["min_silence_at_max_speech"] = int(rng.choice([0, 50, 98, 200]))
    return config


def segmenter_goldens(count: int = 1200, seed: int = 20261127) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        rate = int(rng.choice([16000, 16000, 16000, 8000]))
        frame = 512 if rate == 16000 else 256
        n = int(rng.choice([0, 1, 2, 5, 20, 100, 300, 800, 2000]))
        probs = random_probabilities(rng, n)
        num_samples = max(0, n * frame - int(rng.integers(0, frame)))
        if n and num_samples <= (n - 1) * frame:
            num_samples = (n - 1) * frame + 1
        config = random_config(rng)
        segments = get_speech_timestamps_from_probs(
            [float(p) for p in probs],
            sampling_rate=rate,
            audio_length_samples=num_samples,
            **config,
        )
        cases.append(
            {
                "sample_rate": rate,
                "num_samples": num_samples,
                "config": config,
                "probabilities": encode_f32(probs),
                "segments": [[s["start"], s["end"]] for s in segments],
            }
        )
    return cases


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    provenance = {
        "made_by": "scripts/make_goldens.py (make goldens)",
        "silero_vad": silero_version,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    fixtures = {"provenance": provenance, "fixtures": fixture_goldens()}
    (OUT / "fixtures.json").write_text(json.dumps(fixtures, indent=1) + "\n")
    cases = segmenter_goldens()
    splits = sum(
        1 for c in cases if math.isfinite(c["config"].get("max_speech_duration_s", math.inf))
    )
    print(f"segmenter cases: {len(cases)} ({splits} with max_speech_duration_s)")
    (OUT / "segmenter_cases.json").write_text(
        json.dumps({"provenance": provenance, "cases": cases}) + "\n"
    )


if __name__ == "__main__":
    main()
