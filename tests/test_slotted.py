"""direct_init: the item classes' cheaper __init__ behaves as the dataclass one."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx._slotted import direct_init

# the same fields twice: as dataclasses makes them, and with direct_init's __init__
FIELDS: list[Any] = [
    ("name", str),
    ("count", int),
    ("flag", bool, dataclasses.field(default=False)),
    ("extra", object, dataclasses.field(default=None)),
]
Plain: Any = dataclasses.make_dataclass("Plain", FIELDS, frozen=True, slots=True)
Direct: Any = direct_init(dataclasses.make_dataclass("Direct", FIELDS, frozen=True, slots=True))


@direct_init
@dataclasses.dataclass(frozen=True, slots=True)
class Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")
        object.__setattr__(self, "value", self.value * 2)


def test_same_signature_values_defaults_and_equality_as_the_dataclass_init() -> None:
    assert str(inspect.signature(Direct)) == str(inspect.signature(Plain))
    for args, kwargs in (
        (("a", 1), {}),
        (("a",), {"count": 2, "extra": [1]}),
        ((), {"name": "b", "count": 3, "flag": True}),
    ):
        assert dataclasses.astuple(Direct(*args, **kwargs)) == dataclasses.astuple(
            Plain(*args, **kwargs)
        )
    assert Direct("a", 1) == Direct("a", 1) and Direct("a", 1) != Direct("a", 2)
    with pytest.raises(TypeError, match="count"):
        Direct("a")
    with pytest.raises(TypeError):
        Direct("a", 1, nope=3)


def test_instances_stay_frozen_and_post_init_runs() -> None:
    item = Direct("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.count = 2
    assert Checked(2).value == 4
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)


def test_only_frozen_slotted_dataclasses_with_plain_fields() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    for cls in (Mutable, Factory):
        with pytest.raises(TypeError):
            direct_init(cls)


def test_the_item_classes_still_validate_and_pickle() -> None:
    import pickle

    with pytest.raises(pv.AudioFormatError):
        pv.AudioChunk("s", np.array([np.nan], np.float32))
    item = pv.AudioSlice("s", 0, 0, 1, np.zeros(576, np.float32), 16000, 512)
    again = pickle.loads(pickle.dumps(item))
    assert (again.stream_id, again.num_frames, again.is_last) == ("s", 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.seq = 1  # type: ignore[misc]
