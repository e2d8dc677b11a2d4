"""``prevad-rx plot``: waveform, per-frame speech probability with the thresholds, segments shaded.

Needs matplotlib (``pip install 'prevad-rx[plot]'``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._types import StreamResult
from prevad_rx.cli._files import (
    AudioFileInfo,
    UserError,
    check_output_file,
    check_readable,
    read_blocks,
)

__all__ = ["plot_file"]

_SPEECH = "#2a9d8f"


class _Envelope:
    """Per-bin minimum and maximum of a signal seen block by block (never held whole)."""

    def __init__(self, size: int, bins: int) -> None:
        bins = max(0, min(size, bins))
        self.edges = np.linspace(0, size, bins + 1).astype(np.int64)
        self.lows = np.full(bins, np.inf, np.float32)
        self.highs = np.full(bins, -np.inf, np.float32)

    def add(self, start: int, block: np.ndarray) -> None:
        end = min(start + block.size, int(self.edges[-1]))
        if end <= start:
            return
        block = block[: end - start]
        first = int(np.searchsorted(self.edges, start, side="right")) - 1
        last = int(np.searchsorted(self.edges, end - 1, side="right")) - 1
        bins = np.arange(first, last + 1)
        cuts = np.maximum(self.edges[bins], start) - start
        self.lows[bins] = np.minimum(self.lows[bins], np.minimum.reduceat(block, cuts))
        self.highs[bins] = np.maximum(self.highs[bins], np.maximum.reduceat(block, cuts))


def envelope(
    values: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lows, highs, means)`` of ``values`` over at most ``bins`` even bins."""
    env = _Envelope(values.size, bins)
    env.add(0, values)
    starts = env.edges[:-1]
    means = np.add.reduceat(values, starts, dtype=np.float64) / np.diff(env.edges)
    return starts, env.lows, env.highs, means


async def _analyse(
    path: Path,
    config: VADConfig,
    backend: str,
    backend_options: dict[str, Any] | None,
    workers: int | None,
    bins: int,
) -> tuple[_Envelope, AudioFileInfo, StreamResult]:
    """Run the file through the engine in 10 s blocks, folding its waveform into bins."""
    info = check_readable(path)
    if info.frames == 0:  # length not known up front (some FLAC files): count the frames first
        info = dataclasses.replace(info, frames=sum(b.size for b in read_blocks(info, 10.0)))
    wave = _Envelope(info.frames, bins)
    async with VADEngine(backend, workers, config, backend_options=backend_options) as engine:
        stream = engine.open_stream(
            info.name, sample_rate=info.sample_rate, keep_probabilities=True
        )
        done = 0
        for block in read_blocks(info, 10.0):
            wave.add(done, block)
            done += block.size
            await stream.push(block)
        result = await stream.close()
    return wave, info, result


async def plot_file(
    path: Path,
    output: Path,
    *,
    config: VADConfig,
    backend: str,
    workers: int | None,
    backend_options: dict[str, Any] | None = None,
    width: float = 12.0,
    height: float = 5.0,
    dpi: int = 100,
) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot needs matplotlib: pip install 'prevad-rx[plot]'") from None
    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"{output}: use a .png, .svg or .pdf file name", status=2)
    check_output_file(output, "--output")
    columns = int(width * dpi)  # pixels across: more points than this only alias
    wave, info, result = await _analyse(
        path, config, backend, backend_options, workers, 2 * columns
    )
    assert result.probabilities is not None
    rate = info.sample_rate

    figure, (wave_ax, prob_ax) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(width, height),
        dpi=dpi,
        gridspec_kw={"height_ratios": [1.3, 1.0]},
    )
    duration = info.duration
    # the waveform as a min/max envelope: exact at any zoom, cheap for long files
    wave_ax.fill_between(
        wave.edges[:-1] / rate, wave.lows, wave.highs, color="#264653", linewidth=0
    )
    wave_ax.set_ylabel("amplitude")
    wave_ax.set_title(
        f"{info.name}: {len(result.segments)} speech segments, {duration:.1f} s ({rate} Hz)"
    )

    frame = 512 if result.sample_rate == 16000 else 256
    probabilities = result.probabilities
    if probabilities.size <= columns:  # every frame gets its own step
        frame_times = np.arange(probabilities.size) * frame / result.sample_rate
        prob_ax.step(
            frame_times,
            probabilities,
            where="post",
            color="#e76f51",
            linewidth=1.0,
            label="speech probability",
        )
    else:  # more frames than pixels: each column shows its frames' range and mean
        starts, lows, highs, means = envelope(probabilities.astype(np.float32), columns)
        times = starts * frame / result.sample_rate
        prob_ax.fill_between(
            times,
            lows,
            highs,
            step="post",
            color="#e76f51",
            alpha=0.3,
            linewidth=0,
            label="probability range per pixel",
        )
        prob_ax.step(
            times,
            means,
            where="post",
            color="#e76f51",
            linewidth=1.0,
            label="speech probability (mean per pixel)",
        )
    prob_ax.axhline(
        config.threshold,
        color="#1d3557",
        linestyle="--",
        linewidth=1,
        label=f"threshold {config.threshold:g}",
    )
    prob_ax.axhline(
        config.effective_neg_threshold,
        color="#457b9d",
        linestyle=":",
        linewidth=1,
        label=f"neg_threshold {config.effective_neg_threshold:g}",
    )
    prob_ax.set_ylim(-0.02, 1.02)
    prob_ax.set_ylabel("probability")
    prob_ax.set_xlabel("time (s)")
    prob_ax.set_xlim(0, max(duration, 1e-3))
    for segment in result.segments:
        for ax in (wave_ax, prob_ax):
            ax.axvspan(segment.start, segment.end, color=_SPEECH, alpha=0.25, linewidth=0)
    prob_ax.legend(loc="upper right", fontsize="small", framealpha=0.9)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return 0
