"""``direct_init``: a cheaper ``__init__`` for the frozen, slotted item classes.

A frozen dataclass's generated ``__init__`` stores each field with
``object.__setattr__`` (the class's own ``__setattr__`` refuses), about three
times the cost of storing it through the field's slot descriptor. The chain
makes two such items per 32 ms packet (an ``AudioSlice`` and its
``FrameProbabilities``), so the difference is a few percent of a packet's
whole cost. :func:`direct_init` gives the class an ``__init__`` of the same
signature that stores through the slots, as ``dataclasses`` builds its own (from
generated source). Instances stay frozen: assignment still raises
``FrozenInstanceError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__: list[str] = []  # internal to _types

C = TypeVar("C", bound=type)


def direct_init(cls: C) -> C:
    """Replace the dataclass ``__init__`` of frozen, slotted ``cls`` by one that stores
    each field through its slot (same parameters, defaults and ``__post_init__``)."""
    params = dataclasses.fields(cls)
    options = vars(cls).get("__dataclass_params__")
    if options is None or not options.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    namespace: dict[str, Any] = {}
    signature, body = [], []
    for field in params:
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: only plain fields are supported")
        namespace[f"_set_{field.name}"] = cls.__dict__[field.name].__set__
        if field.default is dataclasses.MISSING:
            signature.append(field.name)
        else:
            namespace[f"_default_{field.name}"] = field.default
            signature.append(f"{field.name}=_default_{field.name}")
        body.append(f"    _set_{field.name}(self, {field.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # our own generated source, as dataclasses does
    init = namespace["__init__"]
    generated = vars(cls)["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(generated.__annotations__)
    init.__doc__ = generated.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning __init__
    return cls
