"""Backend ``torch``: Silero v6.2 (16 kHz) in PyTorch, on the CPU or a CUDA device.

The model is :mod:`prevad_rx.backends._torch_model` (shared with the vLLM
plugin), loaded from the shipped, pinned weights, in fp32 with TF32 off. Both
halves the engine splits are batched: :meth:`TorchBackend.encode` runs every
frame it is given in one call (chunked to ``max_frames``), and
:meth:`TorchBackend.decode` advances all its streams together, one batched
LSTM step per frame.

With ``buckets`` on (the default on CUDA) every device call has a fixed shape:
the frames or streams of a call are padded to the next bucket (powers of two from
32 frames / 8 streams up to ``max_frames`` / ``max_streams``; decoder steps from 1
up to ``max_steps``), larger
calls run as several, and on CUDA each shape is captured once as a CUDA graph
and replayed from then on, with inputs and outputs staged in pinned host
buffers. The padding and unpadding are :mod:`prevad_rx.backends._buckets`;
on the CPU the same bucketed path runs eagerly (``buckets=True``), which is how
it is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from prevad_rx._errors import BackendError, BackendUnavailableError
from prevad_rx.backends._base import Backend, DecodeRequest, ModelRequest, ModelResult
from prevad_rx.backends._buckets import (
    bucket_for,
    chunks,
    pack_runs,
    power_buckets,
    time_rounds,
    unpack_runs,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["TorchBackend", "disable_tf32"]

log = logging.getLogger("prevad_rx.backends")

_WINDOW = 576
_DIM = 128

# live instances per CUDA device, to warn once when several share one device
_devices_lock = threading.Lock()
_devices: Counter[str] = Counter()
_warned: set[str] = set()


def disable_tf32(torch: Any) -> bool:
    """Make torch compute fp32 matmuls and convolutions in IEEE fp32 (no TF32), process-wide.

    TF32 moves Silero's probabilities by up to ~2e-3; exactness needs it off.
    Returns whether the CUDA and cuDNN flags read back as off.
    """
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):  # the flags of torch >= 2.9
        required = [backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn]
        for flag in required:
            flag.fp32_precision = "ieee"
        mkldnn = getattr(backends, "mkldnn", None)
        for name in ("matmul", "conv"):  # the CPU's oneDNN kernels, where torch has the flag
            flag = getattr(mkldnn, name, None)
            if flag is not None and hasattr(flag, "fp32_precision"):
                with contextlib.suppress(RuntimeError, ValueError):
                    flag.fp32_precision = "ieee"
        return all(flag.fp32_precision == "ieee" for flag in required)
    backends.cuda.matmul.allow_tf32 = False
    backends.cudnn.allow_tf32 = False
    return not backends.cuda.matmul.allow_tf32 and not backends.cudnn.allow_tf32


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackendError(f"{name} must be an int >= 1, got {value!r}")
    return value


class TorchBackend(Backend):
    """Silero v6.2 (16 kHz) in PyTorch.

    Args:
        device: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``.
        intra_op_threads: torch's CPU threads (``torch.set_num_threads``, which is
            process-wide), set on ``initialize`` on the CPU; 1 by default because the
            worker pool is the parallelism; None leaves torch's setting alone.
        buckets: pad every call to fixed bucketed shapes (default: on CUDA only).
        cuda_graphs: capture each bucketed shape as a CUDA graph (default: on CUDA).
        precapture: capture every bucketed shape on ``initialize`` rather than on first use,
            so no call waits for a capture under load (default: with ``cuda_graphs``).
        max_frames: most frames per encoder call (larger calls run as several).
        max_streams: most streams per decoder call, with ``buckets``.
        max_steps: most decoder steps (frames per stream) per call, with ``buckets``.
        verify_models: check the shipped weights' sha256 pin on first use.

    On CUDA, run one worker per device (``VADEngine("torch", 1, ...)``): one
    worker batches all ready streams into each call, while several split them into
    smaller calls and each hold a copy of the model and its graphs
    (:attr:`preferred_workers`).
    """

    name = "torch"
    sample_rates = frozenset({16000})

    def __init__(
        self,
        *,
        device: str = "cpu",
        intra_op_threads: int | None = 1,
        buckets: bool | None = None,
        cuda_graphs: bool | None = None,
        precapture: bool | None = None,
        max_frames: int = 4096,
        max_streams: int = 4096,
        max_steps: int = 16,
        verify_models: bool = True,
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'torch' needs PyTorch: pip install 'prevad-rx[torch]'"
            ) from exc
        if not isinstance(device, str):
            raise BackendError(f"device must be a str such as 'cpu' or 'cuda:0', got {device!r}")
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            parsed = None
        if parsed is None or parsed.type not in ("cpu", "cuda"):
            raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if intra_op_threads is not None:
            _positive("intra_op_threads", intra_op_threads)
        self._max_frames = _positive("max_frames", max_frames)
        self._max_streams = _positive("max_streams", max_streams)
        self._max_steps = _positive("max_steps", max_steps)
        on_cuda = parsed.type == "cuda"
        self._buckets = on_cuda if buckets is None else bool(buckets)
        self._graphs = (on_cuda and self._buckets) if cuda_graphs is None else bool(cuda_graphs)
        if self._graphs and not on_cuda:
            raise BackendError("cuda_graphs needs a CUDA device")
        if self._graphs and not self._buckets:
            raise BackendError("cuda_graphs needs buckets (a graph replays one shape)")
        self._precapture = self._graphs if precapture is None else bool(precapture)
        self._torch = torch
        self._device = parsed
        self._threads = intra_op_threads
        self._verify = verify_models
        # padding a small call costs a device next to nothing; fewer shapes, fewer graphs
        self._frame_buckets = power_buckets(self._max_frames, min(32, self._max_frames))
        self._stream_buckets = power_buckets(self._max_streams, min(8, self._max_streams))
        self._step_buckets = power_buckets(self._max_steps)
        self._runner: _Runner | None = None
        self._tf32_off = False
        self._counted: str | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def device(self) -> str:
        """The device this instance runs on, e.g. ``"cpu"`` or ``"cuda:0"``."""
        return str(self._device)

    @property
    def preferred_workers(self) -> int | None:
        """Workers (backend instances) to run per device: 1 on CUDA, None (any) on the CPU."""
        return 1 if self._device.type == "cuda" else None

    def initialize(self) -> None:
        torch = self._torch
        from prevad_rx.backends._torch_model import build

        if self._device.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"device {self.device!r}: this torch ({torch.__version__}) sees no CUDA device"
                )
            index = self._device.index
            if index is None:
                index = torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"device {self.device!r}: only {torch.cuda.device_count()} CUDA device(s)"
                )
            self._device = torch.device("cuda", index)
        elif self._threads is not None:
            torch.set_num_threads(self._threads)
        self._tf32_off = disable_tf32(torch)
        if not self._tf32_off:
            raise BackendError("could not turn TF32 off; results would not match the model")
        model = build(verify=self._verify).to(self._device)
        self._runner = _Runner(
            torch,
            model,
            self._device,
            graphs=self._graphs,
            static=self._buckets,
            max_frames=self._max_frames,
            max_streams=self._max_streams,
            max_steps=self._max_steps,
        )
        if self._precapture and self._buckets:
            self._runner.precapture(self._frame_buckets, self._stream_buckets, self._step_buckets)
        if self._device.type == "cuda":
            self._count_on_device()

    def _count_on_device(self) -> None:
        key = self.device
        with _devices_lock:
            _devices[key] += 1
            self._counted = key
            if _devices[key] > 1 and key not in _warned:
                _warned.add(key)
                log.warning(
                    "prevad_rx: %d torch backends on %s; one worker per device batches best "
                    "(VADEngine('torch', 1, ...))",
                    _devices[key],
                    key,
                )

    def describe(self) -> Mapping[str, object]:
        runner = self._runner
        return {
            "device": self.device,
            "torch": self._torch.__version__,
            "buckets": self._buckets,
            "cuda_graphs": self._graphs,
            "graphs_captured": runner.graphs_captured if runner is not None else 0,
            "tf32": not self._tf32_off,
            "preferred_workers": self.preferred_workers,
        }

    def reset(self) -> None:
        if self._runner is not None:
            self._runner.drop_graphs()

    def abandon(self) -> None:
        # a call overran its deadline: close() may never run (the call may never return),
        # so this instance stops counting towards its device's workers now
        self._uncount()

    def close(self) -> None:
        self._runner = None
        self._uncount()

    def _uncount(self) -> None:
        with _devices_lock:  # abandon() and close() may race: count down once
            if self._counted is not None:
                _devices[self._counted] -= 1
                self._counted = None

    def _ready(self) -> _Runner:
        if self._runner is None:
            raise BackendError("TorchBackend used before initialize()")
        return self._runner

    # ------------------------------------------------------------------ model

    def can_encode(self, sample_rate: int) -> bool:
        return sample_rate == 16000

    def encode(self, windows: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        if sample_rate != 16000:
            raise BackendError(f"the torch backend runs at 16000 Hz, not {sample_rate}")
        runner = self._ready()
        if not (
            isinstance(windows, np.ndarray) and windows.ndim == 2 and windows.shape[1] == _WINDOW
        ):
            shape = getattr(windows, "shape", type(windows).__name__)
            raise BackendError(f"windows must be an array [n, {_WINDOW}], got {shape}")
        n = windows.shape[0]
        out = np.empty((n, _DIM), np.float32)
        buckets = self._frame_buckets if self._buckets else (self._max_frames,)
        for chunk in chunks(n, buckets):
            bucket = chunk.bucket if self._buckets else chunk.stop - chunk.start
            out[chunk.start : chunk.stop] = runner.encode(windows[chunk.start : chunk.stop], bucket)
        return out

    def decode(self, requests: Sequence[DecodeRequest]) -> list[ModelResult]:
        for request in requests:
            if request.sample_rate != 16000:
                raise BackendError(f"the torch backend runs at 16000 Hz, not {request.sample_rate}")
        return self._decode([r.features for r in requests], [r.state for r in requests])

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        for request in requests:
            if request.sample_rate != 16000:
                raise BackendError(f"the torch backend runs at 16000 Hz, not {request.sample_rate}")
        windows = [r.windows for r in requests if r.windows.shape[0]]
        features = self.encode(
            np.concatenate(windows) if windows else np.zeros((0, _WINDOW), np.float32), 16000
        )
        bounds = np.cumsum([0] + [r.windows.shape[0] for r in requests])
        return self._decode(
            [features[bounds[k] : bounds[k + 1]] for k in range(len(requests))],
            [r.state for r in requests],
        )

    def _decode(
        self, features: Sequence[NDArray[np.float32]], states: Sequence[NDArray[np.float32]]
    ) -> list[ModelResult]:
        runner = self._ready()
        lengths = np.fromiter((f.shape[0] for f in features), np.int64, len(features))
        results = [ModelResult(np.zeros(0, np.float32), s) for s in states]
        active = np.flatnonzero(lengths)
        if active.size == 0:
            return results
        try:
            rows = np.concatenate([features[i] for i in active.tolist()]).astype(np.float32)
            state = np.stack([states[i] for i in active.tolist()]).astype(np.float32)
        except ValueError as exc:
            raise BackendError(
                f"features [n, {_DIM}] and states [2, {_DIM}] expected: {exc}"
            ) from exc
        if rows.ndim != 2 or rows.shape[1] != _DIM or state.shape[1:] != (2, _DIM):
            raise BackendError(
                f"features [n, {_DIM}] and states [2, {_DIM}] expected, got rows of shape "
                f"{rows.shape[1:]} and states of shape {state.shape[1:]}"
            )
        offsets = np.cumsum(lengths[active]) - lengths[active]  # of each active run in ``rows``
        run_lengths = lengths[active]
        probs = np.empty(rows.shape[0], np.float32)  # laid out like ``rows``
        max_steps = self._max_steps if self._buckets else None
        for start, steps in time_rounds(run_lengths, max_steps):
            lanes = np.flatnonzero(run_lengths > start)
            if self._buckets:
                lane_chunks = chunks(lanes.size, self._stream_buckets)
            else:
                lane_chunks = chunks(lanes.size, (lanes.size,))
            for chunk in lane_chunks:
                sel = lanes[chunk.start : chunk.stop]
                seg = np.minimum(run_lengths[sel] - start, steps)
                # rows start .. start + seg of each selected run, concatenated
                src = np.repeat(offsets[sel] + start - (np.cumsum(seg) - seg), seg) + np.arange(
                    int(seg.sum())
                )
                longest = int(seg.max())
                shape = (
                    (bucket_for(longest, self._step_buckets), chunk.bucket)
                    if self._buckets
                    else (longest, sel.size)
                )
                probs[src], state[sel] = runner.decode(rows[src], seg, state[sel], shape)
        for k, i in enumerate(active.tolist()):
            a = int(offsets[k])
            results[i] = ModelResult(probs[a : a + int(run_lengths[k])], state[k])
        return results


class _Runner:
    """Runs the model halves on one device: eagerly at exact shapes, or at bucketed shapes
    from static buffers (pinned host twins on CUDA), each shape captured as a CUDA graph."""

    def __init__(
        self,
        torch: Any,
        model: Any,
        device: Any,
        *,
        graphs: bool,
        static: bool,
        max_frames: int,
        max_streams: int,
        max_steps: int,
        capture: Callable[[Callable[[], Any]], tuple[Callable[[], None], Any]] | None = None,
    ) -> None:
        self.torch = torch
        self.model = model
        self.device = device
        self.graphs = graphs
        self.static = static
        self.cuda = device.type == "cuda"
        # CUDA work (graph capture included) runs with this device current on the calling thread
        self._on_device: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.cuda.device(device)) if self.cuda else contextlib.nullcontext
        )
        self._captured: dict[tuple[int, ...], tuple[Callable[[], None], Any]] = {}
        self._pool: Any = None
        # how a shape becomes a graph: CUDA graph capture, or a stand-in with its contract
        self._capture = capture or self._capture_cuda_graph
        if static:
            sizes = {
                "windows": max_frames * _WINDOW,
                "features": max_frames * _DIM,
                "x": max_steps * max_streams * _DIM,
                "h": max_streams * _DIM,
                "c": max_streams * _DIM,
                "probs": max_steps * max_streams,
                "h_out": max_streams * _DIM,
                "c_out": max_streams * _DIM,
            }
            # host staging (pinned on CUDA) and, on CUDA, the device inputs graphs read
            self.host = {
                name: torch.zeros(size, dtype=torch.float32, pin_memory=self.cuda)
                for name, size in sizes.items()
            }
            self.host["lengths"] = torch.zeros(max_streams, dtype=torch.int64, pin_memory=self.cuda)
            inputs = ("windows", "x", "h", "c", "lengths")
            self.dev = (
                {name: torch.zeros_like(self.host[name], device=device) for name in inputs}
                if self.cuda
                else {name: self.host[name] for name in inputs}
            )

    @property
    def graphs_captured(self) -> int:
        return len(self._captured)

    def drop_graphs(self) -> None:
        """Forget captured graphs (re-captured on next use), e.g. after a failed call."""
        self._captured = {}
        self._pool = None

    def precapture(
        self,
        frame_buckets: Sequence[int],
        stream_buckets: Sequence[int],
        step_buckets: Sequence[int],
    ) -> None:
        """Run every bucketed shape once (capturing its graph) on zero inputs."""
        for frames in frame_buckets:
            self.encode(np.zeros((frames, _WINDOW), np.float32), frames)
        state = np.zeros((1, 2, _DIM), np.float32)
        for steps in step_buckets:
            rows = np.zeros((steps, _DIM), np.float32)
            for streams in stream_buckets:
                self.decode(rows, np.array([steps], np.int64), state, (steps, streams))

    def _run(self, key: tuple[int, ...], fn: Callable[[], Any]) -> Any:
        """``fn()`` on the static inputs: eagerly, or as the replay of its captured graph."""
        if not self.graphs:
            return fn()
        entry = self._captured.get(key)
        if entry is None:
            entry = self._captured[key] = self._capture(fn)
        replay, outputs = entry
        replay()
        return outputs

    def _capture_cuda_graph(self, fn: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        """Capture ``fn`` as a CUDA graph: its replay, and the outputs each replay refills."""
        torch = self.torch
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn()  # warm-up: kernels chosen and workspaces allocated outside the capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # one memory pool for all shapes: calls never overlap (one thread, synchronized), and
        # each call reads its outputs before the next replay
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            outputs = fn()
        return graph.replay, outputs

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.current_stream(self.device).synchronize()

    def _input(self, name: str, shape: tuple[int, ...]) -> Any:
        """The static device input ``name`` as ``shape``, filled from its host twin."""
        size = int(np.prod(shape))
        target = self.dev[name][:size].view(shape)
        if self.cuda:
            target.copy_(self.host[name][:size].view(shape), non_blocking=True)
        return target

    def _host(self, name: str, shape: tuple[int, ...]) -> NDArray[Any]:
        size = int(np.prod(shape))
        view: NDArray[Any] = self.host[name][:size].numpy().reshape(shape)
        return view

    def _fetch(self, name: str, tensor: Any) -> NDArray[Any]:
        """Copy a device output into its host buffer; valid after :meth:`_sync`."""
        size = tensor.numel()
        staged = self.host[name][:size].view(tensor.shape)
        staged.copy_(tensor, non_blocking=True)
        view: NDArray[Any] = staged.numpy()
        return view

    def encode(self, windows: NDArray[np.float32], bucket: int) -> NDArray[np.float32]:
        """Features [m, 128] of ``m <= bucket`` windows, run at ``bucket`` frames."""
        torch = self.torch
        m = windows.shape[0]
        with torch.no_grad(), self._on_device():
            if not self.static:
                batch = np.ascontiguousarray(windows, np.float32)
                if not batch.flags.writeable:
                    batch = batch.copy()
                features = self.model.encode(torch.from_numpy(batch).to(self.device))
                out: NDArray[np.float32] = features.cpu().numpy()
                return out
            staged = self._host("windows", (bucket, _WINDOW))
            staged[:m] = windows
            staged[m:] = 0.0
            inputs = self._input("windows", (bucket, _WINDOW))
            features = self._run((0, bucket), lambda: self.model.encode(inputs))
            host = self._fetch("features", features)
            self._sync()
            return host[:m].copy()

    def decode(
        self,
        rows: NDArray[np.float32],
        lengths: NDArray[np.int64],
        states: NDArray[np.float32],
        shape: tuple[int, int],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Runs of ``lengths`` rows each (concatenated in ``rows``) from ``states`` [n, 2, 128],
        run as a [steps, streams] = ``shape`` batch: their probabilities (concatenated) and
        new states."""
        torch = self.torch
        steps, streams = shape
        if self.static:
            x = self._host("x", (steps, streams, _DIM))
            h = self._host("h", (streams, _DIM))
            c = self._host("c", (streams, _DIM))
            counts = self._host("lengths", (streams,))
        else:
            x = np.empty((steps, streams, _DIM), np.float32)
            h = np.empty((streams, _DIM), np.float32)
            c = np.empty((streams, _DIM), np.float32)
            counts = np.empty(streams, np.int64)
        packed = pack_runs(rows, lengths, states, x, h, c, counts)
        with torch.no_grad(), self._on_device():
            if not self.static:
                dev = self.device
                probs, h_out, c_out = self.model.decode(
                    torch.from_numpy(x).to(dev),
                    torch.from_numpy(h).to(dev),
                    torch.from_numpy(c).to(dev),
                    torch.from_numpy(counts).to(dev),
                )
                return unpack_runs(
                    packed, probs.cpu().numpy(), h_out.cpu().numpy(), c_out.cpu().numpy()
                )
            inputs = (
                self._input("x", (steps, streams, _DIM)),
                self._input("h", (streams, _DIM)),
                self._input("c", (streams, _DIM)),
                self._input("lengths", (streams,)),
            )
            probs, h_out, c_out = self._run((1, steps, streams), lambda: self.model.decode(*inputs))
            host = (
                self._fetch("probs", probs),
                self._fetch("h_out", h_out),
                self._fetch("c_out", c_out),
            )
            self._sync()
            return unpack_runs(packed, *host)
