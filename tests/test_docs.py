"""The docs stay true: the API reference matches the code, links resolve, the README runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_api_reference_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_relative_links_resolve() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## In ten lines\n\n```python\n(.*?)```", text, re.S)
    assert example is not None
    lines = run_snippet(example.group(1))
    assert lines[0].startswith("start ") and lines[-1].startswith("[(")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def run_snippet(code: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def conversation_segment_count() -> int:
    from tests.conftest import golden_fixtures

    fixture = next(f for f in golden_fixtures() if f.file.endswith("conversation.wav"))
    return len(fixture.default_segments)


def test_readme_pipeline_by_hand_runs_and_prints_its_events() -> None:
    """The by-hand chain waits for its events (the pool is not closed under them)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("The same pipeline by hand") :]
    lines = run_snippet(python_blocks(section)[0])
    segments = conversation_segment_count()
    events = [line for line in lines if line.startswith("SpeechEvent(")]
    assert len(events) == 2 * segments
    assert sum("kind='start'" in line for line in events) == segments
    assert lines[-1] == f"{2 * segments} events"


def operators_doc_blocks() -> list[str]:
    blocks = python_blocks((ROOT / "docs" / "operators.md").read_text())
    assert len(blocks) == 3  # the chain by hand, your own operators, aioreactive
    return blocks


def test_operators_doc_chain_by_hand_runs() -> None:
    lines = run_snippet(operators_doc_blocks()[0])
    assert [line.split()[0] for line in lines] == ["start", "end"] * conversation_segment_count()


def test_operators_doc_own_operators_run() -> None:
    lines = run_snippet(operators_doc_blocks()[1])
    segments = conversation_segment_count()
    kinds = [line.split()[0] for line in lines[:-1]]
    assert kinds and kinds == ["start", "end"] * (len(kinds) // 2)  # always in pairs
    assert len(kinds) // 2 < segments  # the short ones were filtered out
    assert lines[-1] == f"{segments} segments"  # event operators never remove segments


def test_operators_doc_aioreactive_runs() -> None:
    pytest.importorskip("aioreactive")  # the extra: `make test-aio`
    lines = run_snippet(operators_doc_blocks()[2])
    assert len(lines) == conversation_segment_count()
    assert all(line.endswith("s of speech") for line in lines)
