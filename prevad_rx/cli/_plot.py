"""``prevad-rx plot``: waveform, per-frame speech probability with the thresholds, segments shaded.

Needs matplotlib (``pip install 'prevad-rx[plot]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._types import StreamResult
from prevad_rx.cli._files import UserError, check_readable, read_all

__all__ = ["plot_file"]

_SPEECH = "#2a9d8f"


async def _analyse(
    path: Path,
    config: VADConfig,
    backend: str,
    workers: int | None,
) -> tuple[np.ndarray, int, StreamResult]:
    info = check_readable(path)
    audio = read_all(info)
    async with VADEngine(backend, workers, config) as engine:
        stream = engine.open_stream(
            str(path), sample_rate=info.sample_rate, keep_probabilities=True
        )
        step = 10 * info.sample_rate
        for start in range(0, audio.size, step):
            await stream.push(audio[start : start + step])
        result = await stream.close()
    return audio, info.sample_rate, result


async def plot_file(
    path: Path,
    output: Path,
    *,
    config: VADConfig,
    backend: str,
    workers: int | None,
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
        raise UserError(f"{output}: use a .png, .svg or .pdf file name")
    audio, rate, result = await _analyse(path, config, backend, workers)
    assert result.probabilities is not None

    figure, (wave_ax, prob_ax) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(width, height),
        dpi=dpi,
        gridspec_kw={"height_ratios": [1.3, 1.0]},
    )
    duration = audio.size / rate
    # the waveform as a min/max envelope: exact at any zoom, cheap for long files
    bins = int(min(audio.size, width * dpi * 2))
    edges = np.linspace(0, audio.size, bins + 1).astype(int)
    lows = np.minimum.reduceat(audio, edges[:-1]) if audio.size else np.zeros(0)
    highs = np.maximum.reduceat(audio, edges[:-1]) if audio.size else np.zeros(0)
    times = edges[:-1] / rate
    wave_ax.fill_between(times, lows, highs, color="#264653", linewidth=0)
    wave_ax.set_ylabel("amplitude")
    wave_ax.set_title(
        f"{path.name}: {len(result.segments)} speech segments, {duration:.1f} s ({rate} Hz)"
    )

    frame = 512 if result.sample_rate == 16000 else 256
    frame_times = np.arange(result.probabilities.size) * frame / result.sample_rate
    prob_ax.step(
        frame_times,
        result.probabilities,
        where="post",
        color="#e76f51",
        linewidth=1.0,
        label="speech probability",
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
