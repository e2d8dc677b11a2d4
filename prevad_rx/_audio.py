"""Audio input: validation, conversion to float32 mono, and streaming resampling.

Accepted sample containers: a 1-D numpy array of float32/float64 in [-1, 1]
(values are not clipped), a 1-D int16 array (scaled by 1/32768), PCM16
little-endian ``bytes``/``bytearray``, or a 1-D ``memoryview`` read by its
format: bytes (``'B'``, ``'b'``, ``'c'``) are PCM16 little-endian, ``'h'`` is
int16, ``'f'`` float32, ``'d'`` float64 (strided views are fine). Anything else
is an :class:`~prevad_rx.AudioFormatError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

import numpy as np

from prevad_rx._errors import AudioFormatError, UnsupportedSampleRateError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "NATIVE_SAMPLE_RATES",
    "AudioInput",
    "StreamResampler",
    "model_sample_rate",
    "to_float32_mono",
    "validate_sample_rate",
]

#: Rates the model runs at directly; any other rate is resampled to 16 kHz.
NATIVE_SAMPLE_RATES: Final = frozenset({8000, 16000})
MIN_SAMPLE_RATE: Final = 4000
MAX_SAMPLE_RATE: Final = 384000

#: What ``push()`` and ``AudioChunk`` accept as samples.
AudioInput: TypeAlias = "np.ndarray[Any, Any] | bytes | bytearray | memoryview"


def validate_sample_rate(sample_rate: object) -> int:
    """Return ``sample_rate`` as an int, or raise :class:`UnsupportedSampleRateError`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise UnsupportedSampleRateError(f"sample_rate must be an integer, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRateError(
            f"sample_rate {rate} Hz is outside the supported range "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    return rate


def model_sample_rate(sample_rate: int) -> int:
    """The rate the model runs at for audio arriving at ``sample_rate``."""
    return sample_rate if sample_rate in NATIVE_SAMPLE_RATES else 16000


def to_float32_mono(samples: object) -> NDArray[np.float32]:
    """Convert one chunk of mono audio to a 1-D float32 array, validating it.

    The result may share memory with ``samples`` when that is already a 1-D
    float32 array; callers that keep it must copy.
    """
    if type(samples) is np.ndarray and samples.dtype is _FLOAT32 and samples.ndim == 1:
        audio: NDArray[np.float32] = samples  # the common case, checked first
        if audio.size and not np.isfinite(audio).all():
            _refuse_non_finite(audio, audio)
        return audio
    if isinstance(samples, memoryview):
        samples = _from_memoryview(samples)
    if isinstance(samples, _BYTE_CONTAINERS):
        raw = memoryview(samples).cast("B")
        if raw.nbytes % 2:
            raise AudioFormatError(f"PCM16 audio needs an even number of bytes, got {raw.nbytes}")
        pcm = np.frombuffer(raw, dtype="<i2")
        return pcm.astype(np.float32) * np.float32(1.0 / 32768.0)
    if not isinstance(samples, np.ndarray):
        raise AudioFormatError(
            "audio must be a numpy array (float32, float64 or int16) or PCM16 bytes, "
            f"got {type(samples).__name__}"
        )
    if samples.ndim != 1:
        raise AudioFormatError(
            f"audio must be 1-D mono samples, got shape {samples.shape}"
            + ("; mix channels down first" if samples.ndim == 2 else "")
        )
    if samples.dtype == np.int16:
        return samples.astype(np.float32) * np.float32(1.0 / 32768.0)
    if samples.dtype == np.float32:
        audio = samples
    elif samples.dtype == np.float64:
        with np.errstate(over="ignore"):  # beyond float32's range becomes Inf, refused below
            audio = samples.astype(np.float32)
    else:
        raise AudioFormatError(
            f"audio dtype must be float32, float64 or int16, got {samples.dtype}"
        )
    if audio.size and not np.isfinite(audio).all():
        _refuse_non_finite(audio, samples)
    return audio


def _refuse_non_finite(audio: NDArray[np.float32], source: np.ndarray) -> NoReturn:
    """Raise for the first sample of ``audio`` that is not finite (``source``: the array it
    was converted from, which tells an overflow of float32 from a NaN or Inf)."""
    bad = int(np.flatnonzero(~np.isfinite(audio))[0])
    if np.isfinite(source[bad]):
        raise AudioFormatError(
            f"audio sample {bad} ({float(source[bad]):g}) is beyond the float32 range"
        )
    raise AudioFormatError(f"audio holds NaN or Inf (first at sample {bad})")


_BYTE_FORMATS: Final = frozenset({"B", "b", "c"})
_BYTE_CONTAINERS: Final = (bytes, bytearray, memoryview)  # PCM16 little-endian
_FLOAT32: Final = np.dtype(np.float32)


def _from_memoryview(view: memoryview) -> memoryview | bytes | np.ndarray[Any, Any]:
    """A memoryview as PCM16 bytes (byte formats) or as the numpy array its format names."""
    try:
        ndim, shape, fmt, contiguous = view.ndim, view.shape, view.format, view.c_contiguous
    except ValueError as exc:  # released
        raise AudioFormatError(f"audio memoryview is unusable: {exc}") from None
    if ndim != 1:
        raise AudioFormatError(
            f"audio must be 1-D mono samples, got a memoryview of shape {shape}"
            + ("; mix channels down first" if ndim == 2 else "")
        )
    if fmt.lstrip("@=<>!") in _BYTE_FORMATS:
        return view if contiguous else view.tobytes()
    try:
        return np.asarray(view)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise AudioFormatError(
            f"audio memoryview of format {fmt!r} is not readable: {exc}"
        ) from None


class StreamResampler:
    """Resamples one stream to 16 kHz chunk by chunk, carrying filter state (soxr)."""

    def __init__(self, in_rate: int, out_rate: int = 16000) -> None:
        import soxr

        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def process(self, samples: NDArray[np.float32], last: bool = False) -> NDArray[np.float32]:
        """Resample the next chunk; ``last`` flushes the filter's delay line."""
        out = self._stream.resample_chunk(np.ascontiguousarray(samples), last=last)
        return np.asarray(out, dtype=np.float32).reshape(-1)
