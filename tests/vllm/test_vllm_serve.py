"""A real ``vllm serve`` (CPU build) on 127.0.0.1, driven through ``vllm-api``.

The server runs from the vLLM environment named by ``PREVAD_RX_VLLM_PYTHON``
(``make test-vllm`` points it at ``.venv-vllm/bin/python``); the client runs in the
interpreter running the tests (Python 3.12, no torch, no vLLM). The server is
stopped by its PID at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import prevad_rx as pv
from tests.conftest import ROOT, GoldenFixture, segments_as_lists

pytestmark = pytest.mark.vllm

VLLM_PYTHON = os.environ.get("PREVAD_RX_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as handle:  # the server keeps its own copy of the descriptor
        process = subprocess.Popen(
            [
                VLLM_PYTHON,
                "-m",
                "prevad_rx",
                "vllm-serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"vllm serve exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError(f"vllm serve did not start in 240 s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID (and its engine processes, in its session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    if not Path(VLLM_PYTHON).exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON} (make vllm-env)")
    process, url = start_server(tmp_path_factory.mktemp("vllm") / "serve.log")
    try:
        yield process, url
    finally:
        stop(process)
    assert process.poll() is not None


def test_twenty_streams_through_vllm_serve_equal_onnx(
    server: tuple[subprocess.Popen[bytes], str], fixtures16k: tuple[GoldenFixture, ...]
) -> None:
    _, url = server

    async def main() -> list[tuple[GoldenFixture, pv.StreamResult]]:
        async with pv.VADEngine("vllm-api", 2, backend_options={"url": url}) as engine:

            async def one(index: int) -> tuple[GoldenFixture, pv.StreamResult]:
                fixture = fixtures16k[index % len(fixtures16k)]
                stream = engine.open_stream(f"s{index}", keep_probabilities=True)
                for start in range(0, fixture.audio.size, 32000):
                    await stream.push(fixture.audio[start : start + 32000])
                return fixture, await stream.close()

            return list(await asyncio.gather(*(one(i) for i in range(20))))

    for fixture, result in pv.run(main()):
        assert result.probabilities is not None
        np.testing.assert_allclose(result.probabilities, fixture.probabilities, atol=1e-4, rtol=0)
        assert segments_as_lists(result.segments) == fixture.default_segments


def _shared_memory_segments() -> set[Path]:
    shm = Path("/dev/shm")
    return set(shm.glob("psm_*")) | set(shm.glob("sem.mp-*")) if shm.is_dir() else set()


def test_server_killed_mid_stream(tmp_path: Path, speech16k: GoldenFixture) -> None:
    if not Path(VLLM_PYTHON).exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}")
    segments_before = _shared_memory_segments()
    process, url = start_server(tmp_path / "serve.log")
    try:

        async def main() -> BaseException | None:
            options = {"url": url, "retries": 2, "backoff": 0.1, "timeout": 5.0}
            async with pv.VADEngine("vllm-api", 2, backend_options=options) as engine:
                stream = engine.open_stream()
                await stream.push(speech16k.audio[:64000])
                await stream.flush()
                os.killpg(process.pid, signal.SIGKILL)  # the server dies mid-stream
                try:
                    await stream.push(speech16k.audio[64000:])
                    await stream.close()
                except pv.StreamFailedError as exc:
                    return exc
            return None

        error = pv.run(main())
    finally:
        stop(process)
        # a SIGKILLed vLLM cannot unlink its shared-memory queues; its whole session is
        # gone now, so the segments that appeared while it ran are removed here
        for segment in _shared_memory_segments() - segments_before:
            segment.unlink(missing_ok=True)
    assert isinstance(error, pv.StreamFailedError)
    assert isinstance(error.__cause__, pv.RemoteBackendError)
