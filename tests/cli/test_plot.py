"""``prevad-rx plot`` of a long file: the probability panel is reduced to the pixels it has."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from prevad_rx.cli._files import AudioFileInfo
from tests.cli import run_cli
from tests.conftest import GoldenFixture

PROBABILITY_COLOUR = "#e76f51"
COLUMNS = 1200  # the default picture: 12 in at 100 dpi


def _probability_line_points(svg: str) -> int:
    """Vertices of the stroked paths drawn in the probability colour."""
    points = 0
    for d, style in re.findall(r'<path d="([^"]*)"[^>]*style="([^"]*)"', svg, re.S):
        if f"stroke: {PROBABILITY_COLOUR}" in style:
            points += len(re.findall(r"[ML]", d))
    return points


def test_a_long_file_plots_at_most_two_points_per_pixel_column(
    tmp_path: Path, speech16k: GoldenFixture
) -> None:
    """5 minutes are 9,375 frames for 1,200 columns: drawn one by one they only alias."""
    sf.write(tmp_path / "long.wav", np.resize(speech16k.audio, 16000 * 300), 16000)
    proc = run_cli("plot", "long.wav", "-o", "long.svg", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "long.svg").read_text()
    points = _probability_line_points(svg)
    assert 0 < points <= 2 * COLUMNS + 10  # the line, and its legend entry
    assert "probability range per pixel" in svg and "mean per pixel" in svg


def test_the_waveform_folded_block_by_block_is_the_whole_file_envelope() -> None:
    """plot never holds the file: its blocks, of any size, fold into the same min/max bins."""
    from prevad_rx.cli._plot import _Envelope

    rng = np.random.default_rng(0)
    for _ in range(100):
        size, bins = int(rng.integers(1, 5000)), int(rng.integers(1, 300))
        audio = rng.standard_normal(size).astype(np.float32)
        folded = _Envelope(size, bins)
        start = 0
        while start < size:
            block = audio[start : start + int(rng.integers(1, 700))]
            folded.add(start, block)
            start += block.size
        starts = folded.edges[:-1]
        assert np.array_equal(folded.lows, np.minimum.reduceat(audio, starts))
        assert np.array_equal(folded.highs, np.maximum.reduceat(audio, starts))


def test_a_file_whose_length_is_not_known_up_front_plots_all_its_audio(
    tmp_path: Path, speech16k: GoldenFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FLAC files do not say how long they are (``frames`` 0): all their audio is drawn."""
    import asyncio
    import dataclasses

    from prevad_rx import VADConfig
    from prevad_rx.cli import _plot
    from prevad_rx.cli._files import check_readable

    def unknown_length(path: Path) -> AudioFileInfo:
        return dataclasses.replace(check_readable(path), frames=0)

    monkeypatch.setattr(_plot, "check_readable", unknown_length)
    audio = speech16k.audio
    sf.write(tmp_path / "talk.wav", audio, 16000, subtype="FLOAT")
    plot = _plot.plot_file(
        tmp_path / "talk.wav", tmp_path / "talk.svg", config=VADConfig(), backend="onnx", workers=1
    )
    assert asyncio.run(plot) == 0
    svg = (tmp_path / "talk.svg").read_text()
    assert f"{audio.size / 16000:.1f} s (16000 Hz)" in svg  # the title, written as a comment
    # the waveform is a filled collection: a path in <defs>, drawn by a <use> in its colour
    (shape,) = re.findall(r'<use xlink:href="#([^"]+)"[^>]*style="fill: #264653"', svg)
    (outline,) = re.findall(rf'<path id="{shape}" d="([^"]*)"', svg, re.S)
    assert len(re.findall(r"[ML]", outline)) > 2 * COLUMNS  # every bin drawn, to the end
