"""The wire format between prevad_rx and the model served by vLLM (no torch, no vLLM here).

One request = one run of frames of one stream::

    {"windows": <base64 float32 [n, 576]>, "frames": n, "state": <base64 float32 [2, 128]>}

One response row (the pooled output of the request)::

    [n, h(128), c(128), p_0 .. p_{n-1}, padding up to MAX_FRAMES]

Stateless server, state on the client: the client sends the stream's LSTM state
with every request and gets the new one back, so any server replica can serve any
request, and a retry is safe while the client still holds the state it sent.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

__all__ = [
    "FRAME_WIDTH",
    "MAX_FRAMES",
    "OUTPUT_WIDTH",
    "ProtocolError",
    "decode_array",
    "encode_array",
    "pack_output",
    "request_payload",
    "unpack_output",
]

FRAME_WIDTH = 576  # 64 context + 512 samples
MAX_FRAMES = 512  # frames per request (16.4 s of 16 kHz audio)
STATE_SIZE = 2 * 128
OUTPUT_WIDTH = 1 + STATE_SIZE + MAX_FRAMES


class ProtocolError(ValueError):
    """A request or response does not follow the format."""


def encode_array(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def decode_array(text: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(text, str):
        raise ProtocolError(f"{what}: expected base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ProtocolError(f"{what}: not base64 ({exc})") from None
    expected = int(np.prod(shape)) * 4
    if len(raw) != expected:
        raise ProtocolError(f"{what}: {len(raw)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def request_payload(windows: np.ndarray, state: np.ndarray) -> dict[str, Any]:
    n = int(windows.shape[0])
    if not 0 < n <= MAX_FRAMES:
        raise ProtocolError(f"a request holds 1..{MAX_FRAMES} frames, not {n}")
    return {"windows": encode_array(windows), "frames": n, "state": encode_array(state)}


def parse_request(data: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a request: (windows [n, 576], state [2, 128])."""
    if not isinstance(data, dict):
        raise ProtocolError("request data must be an object")
    frames = data.get("frames")
    if isinstance(frames, bool) or not isinstance(frames, int) or not 0 < frames <= MAX_FRAMES:
        raise ProtocolError(f"frames must be an int in 1..{MAX_FRAMES}, got {frames!r}")
    windows = decode_array(data.get("windows"), (frames, FRAME_WIDTH), "windows")
    state = decode_array(data.get("state"), (2, 128), "state")
    if not (np.isfinite(windows).all() and np.isfinite(state).all()):
        raise ProtocolError("request holds NaN or Inf")
    return windows, state


def pack_output(probabilities: np.ndarray, state: np.ndarray) -> np.ndarray:
    row = np.zeros(OUTPUT_WIDTH, np.float32)
    n = probabilities.shape[0]
    row[0] = n
    row[1 : 1 + STATE_SIZE] = state.reshape(-1)
    row[1 + STATE_SIZE : 1 + STATE_SIZE + n] = probabilities
    return row


def unpack_output(row: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a response row for a request of ``frames`` frames: (probs [n], state [2,128])."""
    row = np.asarray(row, dtype=np.float32).reshape(-1)
    if row.shape[0] != OUTPUT_WIDTH:
        raise ProtocolError(f"response has {row.shape[0]} values, expected {OUTPUT_WIDTH}")
    if int(row[0]) != frames:
        raise ProtocolError(f"response is for {int(row[0])} frames, the request had {frames}")
    probabilities = row[1 + STATE_SIZE : 1 + STATE_SIZE + frames].copy()
    state = row[1 : 1 + STATE_SIZE].reshape(2, 128).copy()
    if not (np.isfinite(probabilities).all() and np.isfinite(state).all()):
        raise ProtocolError("response holds NaN or Inf")
    if probabilities.size and (probabilities.min() < 0.0 or probabilities.max() > 1.0):
        raise ProtocolError("response probabilities outside [0, 1]")
    return probabilities, state
