"""Output formats of ``prevad-rx detect``: JSON lines, RTTM, CSV and Audacity labels."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EXTENSIONS", "FORMATS", "FileResult", "render"]


@dataclass
class FileResult:
    """One file's speech segments, positions at the file's own sample rate."""

    file: str
    sample_rate: int
    duration: float
    segments: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sample_rate": self.sample_rate,
            "duration": round(self.duration, 3),
            "segments": self.segments,
        }


def _json(results: list[FileResult], header: bool) -> str:
    return "".join(json.dumps(r.as_json()) + "\n" for r in results)


def _rttm(results: list[FileResult], header: bool) -> str:
    """NIST RTTM, one SPEAKER line per segment with the label ``speech``."""
    lines = []
    for result in results:
        uri = Path(result.file).stem.replace(" ", "_")
        for s in result.segments:
            duration = s["end"] - s["start"]
            lines.append(
                f"SPEAKER {uri} 1 {s['start']:.3f} {duration:.3f} <NA> <NA> speech <NA> <NA>\n"
            )
    return "".join(lines)


def _csv(results: list[FileResult], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["file", "start", "end", "start_sample", "end_sample"])
    for result in results:
        for s in result.segments:
            writer.writerow([result.file, s["start"], s["end"], s["start_sample"], s["end_sample"]])
    return out.getvalue()


def _audacity(results: list[FileResult], header: bool) -> str:
    """Audacity's label track: start, end (seconds) and label, tab-separated."""
    return "".join(
        f"{s['start_sample'] / r.sample_rate:.6f}\t{s['end_sample'] / r.sample_rate:.6f}\tspeech\n"
        for r in results
        for s in r.segments
    )


def at_rate(segment: dict[str, Any], rate: int, target_rate: int) -> dict[str, Any]:
    """``segment`` (a :meth:`Segment.to_dict`) with sample positions moved from ``rate``
    to ``target_rate``: the engine reports positions at the rate the model ran at, the
    command line at the input's own rate."""
    if rate != target_rate:
        for key in ("start_sample", "end_sample"):
            segment[key] = round(segment[key] * target_rate / rate)
    return segment


FORMATS = {"json": _json, "rttm": _rttm, "csv": _csv, "audacity": _audacity}
EXTENSIONS = {"json": ".json", "rttm": ".rttm", "csv": ".csv", "audacity": ".txt"}


def render(fmt: str, results: list[FileResult], *, header: bool = True) -> str:
    """``results`` in format ``fmt``; ``header`` (CSV) is written once per output."""
    return FORMATS[fmt](results, header)
