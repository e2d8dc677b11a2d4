"""The model stage's backend calls: one batch in, results checked in full, faults isolated.

Input: an :class:`~prevad_rx._lanes.EncodeBatch` or
:class:`~prevad_rx._lanes.DecodeBatch` and the worker's backend.
Output: one outcome per slice (encode: its features) or per run (decode: a
checked :class:`~prevad_rx.backends.ModelResult`), or, where that item's call
raised or returned something malformed, the exception. A batched call that
raises is retried item by item (:func:`call_isolated`), so a fault fails only
the streams it belongs to.

Nothing here holds a lock or touches a lane's bookkeeping; the decode call
only reads the lanes' states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from prevad_rx._errors import BackendError
from prevad_rx._lanes import DecodeBatch, EncodeBatch, Lane, NotRun, Work
from prevad_rx._types import AudioSlice
from prevad_rx.backends import Backend, DecodeRequest, ModelRequest, ModelResult

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["decode_batch", "encode_batch"]

T = TypeVar("T")
R = TypeVar("R")

Run = tuple[Lane, list[Work]]


def call_isolated(
    items: Sequence[T],
    call: Callable[[Sequence[T]], Sequence[R]],
    recover: Callable[[], bool],
) -> list[R | BaseException]:
    """``call(items)``; if it raises, call each item alone so only the faulty ones fail.

    Any exception counts, ``SystemExit`` and other ``BaseException`` included: it
    fails the items' streams, never the worker thread. ``recover()`` runs after
    each failed call (the backend drops what the call left in its caches) and says
    whether the backend may be called again; once it may not, the items not yet
    tried come back as :class:`NotRun` (they run again elsewhere, failing nothing).
    """
    try:
        return list(call(items))
    except BaseException as exc:  # noqa: BLE001 - isolated below
        usable = recover()
        if len(items) == 1:
            return [exc]
        if not usable:
            return [NotRun() for _ in items]
    outcomes: list[R | BaseException] = []
    for index, item in enumerate(items):
        try:
            outcomes.extend(call([item]))
        except BaseException as exc:  # noqa: BLE001 - reported as the stream's failure
            outcomes.append(exc)
            if not recover():
                outcomes.extend(NotRun() for _ in items[index + 1 :])
                break
    return outcomes


def encode_batch(
    backend: Backend, batch: EncodeBatch, name: str, recover: Callable[[], bool]
) -> list[NDArray[np.float32] | BaseException]:
    """Each slice's encoder features, or the exception that failed it."""
    return call_isolated(batch.slices, lambda items: _encode_call(backend, items, name), recover)


def decode_batch(
    backend: Backend,
    batch: DecodeBatch,
    name: str,
    initial_state: NDArray[np.float32],
    recover: Callable[[], bool],
) -> list[ModelResult | BaseException]:
    """Each run's probabilities and new state, or the exception that failed it."""
    return call_isolated(
        batch.runs, lambda runs: _decode_call(backend, runs, name, initial_state), recover
    )


def _encode_call(
    backend: Backend, items: Sequence[AudioSlice], name: str
) -> list[NDArray[np.float32]]:
    windows = [item.windows for item in items]
    features = backend.encode(
        windows[0] if len(windows) == 1 else np.concatenate(windows), items[0].sample_rate
    )
    total = sum(w.shape[0] for w in windows)
    if not (isinstance(features, np.ndarray) and features.ndim == 2 and features.shape[0] == total):
        shape = getattr(features, "shape", type(features).__name__)
        raise BackendError(
            f"backend {name!r}: encode returned {shape} for {total} frames, expected [{total}, dim]"
        )
    bounds = np.cumsum([0] + [w.shape[0] for w in windows])
    return [features[bounds[k] : bounds[k + 1]] for k in range(len(items))]


def _decode_call(
    backend: Backend, runs: Sequence[Run], name: str, initial_state: NDArray[np.float32]
) -> list[ModelResult]:
    decode_idx = [i for i, (lane, _) in enumerate(runs) if lane.encodable]
    process_idx = [i for i, (lane, _) in enumerate(runs) if not lane.encodable]
    results: list[ModelResult | None] = [None] * len(runs)
    if decode_idx:
        requests = [
            DecodeRequest(
                _concat([w.features for w in runs[i][1] if w.features is not None]),
                runs[i][0].state,
                runs[i][0].sample_rate,
            )
            for i in decode_idx
        ]
        decoded = _counted(backend.decode(requests), len(requests), name)
        for i, result in zip(decode_idx, decoded, strict=True):
            results[i] = result
    if process_idx:
        model_requests = [
            ModelRequest(
                _concat([w.slice.windows for w in runs[i][1]]),
                runs[i][0].state,
                runs[i][0].sample_rate,
            )
            for i in process_idx
        ]
        processed = _counted(backend.process(model_requests), len(model_requests), name)
        for i, result in zip(process_idx, processed, strict=True):
            results[i] = result
    return checked_results(
        results,
        [sum(w.slice.num_frames for w in works) for _, works in runs],
        name,
        initial_state,
    )


def _counted(results: object, expected: int, name: str) -> list[Any]:
    """The backend's results as a list, one per request, or a :class:`BackendError`."""
    if not isinstance(results, Sequence) or len(results) != expected:
        count = len(results) if isinstance(results, Sequence) else type(results).__name__
        raise BackendError(f"backend {name!r} returned {count} results for {expected} requests")
    return list(results)


def checked_results(
    results: Sequence[object],
    frames: Sequence[int],
    name: str,
    expected: NDArray[np.float32],
) -> list[ModelResult]:
    """A call's results, checked in full: for ``frames[i]`` frames, probabilities a float
    array of that shape, finite and within [0, 1]; the state finite and of ``expected``'s
    shape and dtype. Anything else raises :class:`BackendError`. The value checks run
    once over the whole call (a failure is then narrowed down by :func:`call_isolated`)."""
    checked: list[ModelResult] = []
    for result, n in zip(results, frames, strict=True):
        probabilities = getattr(result, "probabilities", None)
        state = getattr(result, "state", None)
        if not isinstance(probabilities, np.ndarray) or not isinstance(state, np.ndarray):
            raise BackendError(
                f"backend {name!r} returned {type(result).__name__}, expected a "
                "ModelResult of two numpy arrays"
            )
        if probabilities.shape != (n,):
            raise BackendError(
                f"backend {name!r} returned {probabilities.shape} probabilities for {n} frames"
            )
        if probabilities.dtype.kind != "f":
            raise BackendError(
                f"backend {name!r} returned probabilities of dtype {probabilities.dtype}, "
                "expected floats"
            )
        if state.shape != expected.shape or state.dtype != expected.dtype:
            raise BackendError(
                f"backend {name!r} returned a state of shape {state.shape} and dtype "
                f"{state.dtype}, expected {expected.shape} {expected.dtype}"
            )
        if probabilities.dtype != np.float32:
            checked.append(ModelResult(probabilities.astype(np.float32), state))
        elif type(result) is ModelResult:
            checked.append(result)  # as it came: one object less per stream and call
        else:
            checked.append(ModelResult(probabilities, state))
    if not checked:
        return checked
    every = [r.probabilities for r in checked]
    values: Any = every[0] if len(every) == 1 else np.concatenate(every)
    # NaN fails both comparisons, so this one test also rules out NaN and Inf
    if values.size:
        low, high = float(values.min()), float(values.max())
        if not (low >= 0.0 and high <= 1.0):
            if not np.isfinite(values).all():
                raise BackendError(f"backend {name!r} returned non-finite probabilities")
            raise BackendError(
                f"backend {name!r} returned probabilities outside [0, 1] "
                f"(min {low:.4g}, max {high:.4g})"
            )
    states = checked[0].state if len(checked) == 1 else np.concatenate([r.state for r in checked])
    if not np.isfinite(states).all():
        raise BackendError(f"backend {name!r} returned a non-finite state")
    return checked


def _concat(arrays: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    """Concatenate along frames, skipping empty runs (which may lack the column shape)."""
    nonempty = [a for a in arrays if a.shape[0]]
    if not nonempty:
        return arrays[0] if arrays else np.zeros((0, 0), np.float32)
    return nonempty[0] if len(nonempty) == 1 else np.concatenate(nonempty)
