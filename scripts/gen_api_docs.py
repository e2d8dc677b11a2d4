"""Write docs/api.md from the public API's signatures and docstrings.

    .venv/bin/python scripts/gen_api_docs.py          # rewrite docs/api.md
    .venv/bin/python scripts/gen_api_docs.py --check  # exit 1 if it is out of date

The test suite runs ``--check``, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import prevad_rx
import prevad_rx.backends
import prevad_rx.bench
import prevad_rx.operators

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api.md"

SECTIONS: list[tuple[str, ModuleType, str]] = [
    ("prevad_rx", prevad_rx, "import prevad_rx as pv"),
    ("prevad_rx.operators", prevad_rx.operators, "from prevad_rx import operators"),
    ("prevad_rx.backends", prevad_rx.backends, "from prevad_rx import backends"),
    ("prevad_rx.bench", prevad_rx.bench, "from prevad_rx import bench"),
]


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else ""


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _internal(cls: type) -> bool:
    """A prevad_rx class the API does not export (a base whose members count as the
    subclass's own)."""
    exported = any(getattr(module, cls.__name__, None) is cls for _, module, _ in SECTIONS)
    return cls.__module__.startswith("prevad_rx") and not exported


def _own_and_internal(cls: type) -> dict[str, Any]:
    """The class's members, then those it inherits from internal bases."""
    members: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is not cls and not _internal(klass):
            continue
        for name, member in vars(klass).items():
            members.setdefault(name, member)
    return members


def _members(cls: type) -> list[str]:
    lines = []
    for name, member in _own_and_internal(cls).items():
        if name.startswith("_") and name not in ("__aenter__", "__enter__"):
            continue
        if isinstance(member, property):
            summary = _doc(member).split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{name}` (property){': ' + summary if summary else ''}")
        elif inspect.isfunction(member) or inspect.iscoroutinefunction(member):
            prefix = "async " if inspect.iscoroutinefunction(member) else ""
            summary = _doc(member).split("\n\n")[0].replace("\n", " ")
            lines.append(
                f"- `{prefix}{name}{_signature(member)}`{': ' + summary if summary else ''}"
            )
    return lines


def _entry(module_name: str, name: str, obj: Any) -> list[str]:
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj):
        bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object and not _internal(b))
        lines.append(f"*class*{f' ({bases})' if bases else ''}")
        lines += ["", "```python", f"{name}{_signature(obj)}", "```", ""]
        if _doc(obj):
            lines += [_doc(obj), ""]
        members = _members(obj)
        if members:
            lines += [*members, ""]
    elif callable(obj):
        lines += ["```python", f"{name}{_signature(obj)}", "```", ""]
        if _doc(obj):
            lines += [_doc(obj), ""]
    elif isinstance(obj, ModuleType):
        lines += [f"The `{obj.__name__}` module (see its section).", ""]
    else:
        lines += [f"*value*: `{obj!r}`"[:300], ""]
    return lines


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the code by `scripts/gen_api_docs.py`; the test suite fails if it",
        "is out of date. Everything listed is public; anything else is private.",
        "",
    ]
    for module_name, module, how in SECTIONS:
        lines += [f"## `{module_name}`", "", f"`{how}`", ""]
        summary = _doc(module).split("\n\n")[0]
        if summary:
            lines += [summary, ""]
        for name in sorted(module.__all__, key=str.lower):
            if name.startswith("__"):
                continue
            lines += _entry(module_name, name, getattr(module, name))
    text = "\n".join(lines).rstrip() + "\n"
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # object addresses change from run to run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api.md is out of date: run scripts/gen_api_docs.py", file=sys.stderr)
            sys.exit(1)
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
