"""``disable_tf32`` on both generations of torch's precision flags (fakes: no torch needed)."""

from __future__ import annotations

from types import SimpleNamespace

from prevad_rx.backends._torch import disable_tf32


def _flag(value: str) -> SimpleNamespace:
    return SimpleNamespace(fp32_precision=value)


def test_the_fp32_precision_flags_of_newer_torch_are_set_to_ieee() -> None:
    backends = SimpleNamespace(
        cuda=SimpleNamespace(matmul=_flag("tf32")),
        cudnn=SimpleNamespace(conv=_flag("tf32"), rnn=_flag("none")),
        mkldnn=SimpleNamespace(matmul=_flag("bf16"), conv=_flag("none")),
    )
    assert disable_tf32(SimpleNamespace(backends=backends))
    flags = [backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn]
    flags += [backends.mkldnn.matmul, backends.mkldnn.conv]
    assert [f.fp32_precision for f in flags] == ["ieee"] * 5


def test_a_flag_that_does_not_stick_is_reported() -> None:
    class Stuck:
        @property
        def fp32_precision(self) -> str:
            return "tf32"

        @fp32_precision.setter
        def fp32_precision(self, value: str) -> None:
            pass

    backends = SimpleNamespace(
        cuda=SimpleNamespace(matmul=_flag("tf32")),
        cudnn=SimpleNamespace(conv=Stuck(), rnn=_flag("tf32")),
    )
    assert not disable_tf32(SimpleNamespace(backends=backends))


def test_the_allow_tf32_flags_of_older_torch_are_cleared() -> None:
    backends = SimpleNamespace(
        cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)),
        cudnn=SimpleNamespace(allow_tf32=True),
    )
    assert disable_tf32(SimpleNamespace(backends=backends))
    assert backends.cuda.matmul.allow_tf32 is False and backends.cudnn.allow_tf32 is False
