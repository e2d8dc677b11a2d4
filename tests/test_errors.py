"""One exception tree: everything derives from PrevadError, value errors are also ValueErrors."""

from __future__ import annotations

import inspect

import prevad_rx as pv
from prevad_rx import _errors


def test_every_error_derives_from_prevad_error() -> None:
    classes = [obj for _, obj in inspect.getmembers(_errors, inspect.isclass)]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, pv.PrevadError), cls
        assert cls.__name__ in pv.__all__, cls


def test_familiar_builtin_bases() -> None:
    assert issubclass(pv.ConfigError, ValueError)
    assert issubclass(pv.AudioFormatError, ValueError)
    assert issubclass(pv.UnsupportedSampleRateError, pv.AudioFormatError)
    assert issubclass(pv.UnknownBackendError, LookupError)
    assert issubclass(pv.SliceOrderError, pv.StreamFailedError)
    assert issubclass(pv.StreamFailedError, pv.StreamError)


def test_stream_errors_name_the_stream_and_slice() -> None:
    error = pv.StreamFailedError("boom", "caller-1", 7)
    assert (error.stream_id, error.seq, str(error)) == ("caller-1", 7, "boom")
    assert pv.StreamClosedError("closed", "x").stream_id == "x"


def test_the_tree_is_documented() -> None:
    doc = _errors.__doc__ or ""
    for name in _errors.__all__:
        assert name in doc, name
