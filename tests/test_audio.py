"""Audio input conversion and validation (AudioChunk construction)."""

from __future__ import annotations

import numpy as np
import pytest

import prevad_rx as pv


def test_float32_is_used_as_is() -> None:
    samples = np.linspace(-1, 1, 100, dtype=np.float32)
    chunk = pv.AudioChunk("a", samples)
    assert chunk.samples.dtype == np.float32
    np.testing.assert_array_equal(chunk.samples, samples)


def test_int16_and_pcm16_bytes_are_scaled_identically() -> None:
    pcm = np.array([0, 1, -1, 16384, -32768, 32767], dtype=np.int16)
    from_array = pv.AudioChunk("a", pcm).samples
    from_bytes = pv.AudioChunk("a", pcm.astype("<i2").tobytes()).samples
    from_view = pv.AudioChunk("a", memoryview(bytearray(pcm.astype("<i2").tobytes()))).samples
    np.testing.assert_array_equal(from_array, from_bytes)
    np.testing.assert_array_equal(from_array, from_view)
    assert from_array[4] == -1.0 and from_array[3] == 0.5


def test_float64_is_converted() -> None:
    chunk = pv.AudioChunk("a", np.array([0.25, -0.5]))
    assert chunk.samples.dtype == np.float32
    assert chunk.samples.tolist() == [0.25, -0.5]


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.zeros((10, 2), np.float32), "mix channels down"),
        (np.zeros((2, 3, 4), np.float32), "1-D"),
        (np.zeros(4, np.int32), "dtype"),
        (np.zeros(4, np.complex64), "dtype"),
        (np.array([0.0, np.nan], np.float32), "NaN or Inf"),
        (np.array([np.inf], np.float64), "NaN or Inf"),
        (b"\x00\x01\x02", "even number of bytes"),
        ([0.0, 0.1], "numpy array"),
        ("audio", "numpy array"),
    ],
)
def test_bad_audio_raises_audio_format_error(samples: object, message: str) -> None:
    with pytest.raises(pv.AudioFormatError, match=message):
        pv.AudioChunk("a", samples)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -16000, 1000, 10_000_000, 16000.0, "16000", True])
def test_bad_sample_rates_raise(rate: object) -> None:
    with pytest.raises(pv.UnsupportedSampleRateError):
        pv.AudioChunk("a", np.zeros(4, np.float32), rate)  # type: ignore[arg-type]


def test_any_reasonable_rate_is_accepted_and_8k_16k_are_native() -> None:
    for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000):
        assert pv.AudioChunk("a", np.zeros(4, np.float32), rate).sample_rate == rate
    assert frozenset({8000, 16000}) == pv.NATIVE_SAMPLE_RATES


def test_empty_chunk_is_allowed() -> None:
    assert pv.AudioChunk("a", np.zeros(0, np.float32)).samples.size == 0
    assert pv.AudioChunk("a", b"").samples.size == 0


def test_stream_id_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        pv.AudioChunk(7, np.zeros(4, np.float32))  # type: ignore[arg-type]


def test_a_memoryview_is_read_by_its_format() -> None:
    pcm = np.array([0, 16384, -32768, 32767, -1, 1], dtype=np.int16)
    floats = pcm.astype(np.float32) / np.float32(32768)
    expected = pv.AudioChunk("a", pcm).samples
    for view in (
        memoryview(pcm),  # format 'h'
        memoryview(floats),  # format 'f': not bytes of PCM16
        memoryview(floats.astype(np.float64)),  # format 'd'
        memoryview(pcm.astype("<i2").tobytes()),  # format 'B': PCM16 little-endian
        memoryview(bytearray(pcm.astype("<i2").tobytes())).cast("c"),
    ):
        samples = pv.AudioChunk("a", view).samples
        assert samples.dtype == np.float32
        np.testing.assert_array_equal(samples, expected)


def test_a_strided_memoryview_is_read() -> None:
    pcm = np.arange(-8, 8, dtype=np.int16)
    every_other = pv.AudioChunk("a", memoryview(pcm)[::2]).samples
    np.testing.assert_array_equal(every_other, pv.AudioChunk("a", pcm[::2]).samples)
    floats = np.linspace(-1, 1, 9, dtype=np.float32)
    np.testing.assert_array_equal(
        pv.AudioChunk("a", memoryview(floats)[1::3]).samples, floats[1::3]
    )


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (memoryview(np.zeros((10, 2), np.int16)), "mix channels down"),
        (memoryview(np.zeros((2, 3, 4), np.float32)), "1-D"),
        (memoryview(np.zeros(4, np.int32)), "dtype"),
        (memoryview(np.zeros(4, ">i2")), "dtype"),
        (memoryview(np.zeros(4, np.bool_)), "dtype"),
        (memoryview(b"\x00\x01\x02"), "even number of bytes"),
    ],
)
def test_bad_memoryviews_raise_audio_format_error(view: memoryview, message: str) -> None:
    with pytest.raises(pv.AudioFormatError, match=message):
        pv.AudioChunk("a", view)


def test_a_released_memoryview_raises_audio_format_error() -> None:
    view = memoryview(np.zeros(4, np.int16))
    view.release()
    with pytest.raises(pv.AudioFormatError):
        pv.AudioChunk("a", view)


def test_float64_beyond_float32_range_is_refused_without_a_warning() -> None:
    # warnings are errors in this suite: a RuntimeWarning from the cast would fail first
    with pytest.raises(pv.AudioFormatError, match=r"sample 1 .* beyond the float32 range"):
        pv.AudioChunk("a", np.array([0.0, 1e39, 0.5]))
    with pytest.raises(pv.AudioFormatError, match="NaN or Inf"):
        pv.AudioChunk("a", np.array([0.0, -np.inf, 1e39]))
