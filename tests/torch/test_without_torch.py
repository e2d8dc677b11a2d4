"""Where PyTorch is not installed, ``torch`` is still listed and asking for it says what to do."""

from __future__ import annotations

import importlib.util

import pytest

import prevad_rx as pv

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="PyTorch is installed here"
)


def test_torch_is_listed_and_unavailable_without_pytorch() -> None:
    assert "torch" in pv.available_backends()
    with pytest.raises(pv.BackendUnavailableError, match=r"prevad-rx\[torch\]"):
        pv.create_backend("torch")


def test_an_engine_on_torch_fails_to_start_with_the_same_error() -> None:
    with pytest.raises(pv.BackendUnavailableError, match=r"prevad-rx\[torch\]"):
        pv.WorkerPool("torch", 1).start()
