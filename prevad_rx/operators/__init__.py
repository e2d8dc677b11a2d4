"""The five reactive operators, composable with reactivex ``pipe``.

::

    AudioChunk
      │ window_slices(frames_per_slice)        cut into numbered slices of whole frames
    AudioSlice
      │ parallel_map_on_pool(pool)             encoder in parallel, decoder in order, batched
    FrameProbabilities
      │ reorder_by_seq(max_buffered)           checked per-stream order, bounded buffer
    FrameProbabilities
      │ merge_segments(config, keep_audio)     silero's hysteresis, exact, as early as possible
    SpeechEvent | StreamFailure
      │ emit_events(*handlers, kinds)          user-facing events (failures become "error")
    SpeechEvent

Any of them may be replaced, and your own operators inserted anywhere (e.g. a
gain before ``window_slices``, a filter after ``emit_events``). Write them with
:func:`per_stream` (per-stream state, failures in-band, typed) as the built-ins
are, or :func:`operator_from` for full control; :func:`run_pipeline` runs a
chain and returns what it emitted; :func:`contain` keeps any operator's faults
inside the stream they happened on.
"""

from prevad_rx.operators._builder import (
    FailedStreams,
    Handler,
    Operator,
    StreamItem,
    ends_stream,
    operator_from,
    per_stream,
)
from prevad_rx.operators._emit_events import EventHandler, emit_events
from prevad_rx.operators._guard import contain
from prevad_rx.operators._merge_segments import ConfigSource, merge_segments
from prevad_rx.operators._parallel_map_on_pool import parallel_map_on_pool
from prevad_rx.operators._pipeline import run_pipeline
from prevad_rx.operators._reorder_by_seq import Sequenced, reorder_by_seq
from prevad_rx.operators._window_slices import DEFAULT_FRAMES_PER_SLICE, window_slices

__all__ = [
    "DEFAULT_FRAMES_PER_SLICE",
    "ConfigSource",
    "EventHandler",
    "FailedStreams",
    "Handler",
    "Operator",
    "Sequenced",
    "StreamItem",
    "contain",
    "emit_events",
    "ends_stream",
    "merge_segments",
    "operator_from",
    "parallel_map_on_pool",
    "per_stream",
    "reorder_by_seq",
    "run_pipeline",
    "window_slices",
]
