"""The ``vllm-api`` client against a real HTTP server on 127.0.0.1 that speaks the protocol.

The server (``tests/fake_vllm_server.py``) computes with the ONNX backend, so
results must be exact, and it can misbehave on request: HTTP 500, garbage,
wrong sizes, NaN, nested JSON, slowness, dropped connections, huge, endless and
drip-fed answers, a required API key, TLS.
The real ``vllm serve`` is tested in ``tests/vllm/`` (``make test-vllm``).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import subprocess
import threading
import time
import traceback
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import _vllm_api
from tests.conftest import GoldenFixture, assert_silero_probabilities, segments_as_lists
from tests.fake_vllm_server import POISON, FakeVllmServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[FakeVllmServer]:
    with FakeVllmServer() as running:
        yield running


async def run_streams(
    url: str, audio: np.ndarray, streams: int = 4, **options: Any
) -> list[pv.StreamResult | BaseException]:
    async with pv.VADEngine(
        "vllm-api", 2, backend_options={"url": url, **options}, min_slice_timeout=30
    ) as engine:

        async def one(index: int) -> pv.StreamResult:
            stream = engine.open_stream(f"s{index}", keep_probabilities=True)
            for start in range(0, audio.size, 32000):
                await stream.push(audio[start : start + 32000])
            return await stream.close()

        return list(await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True))


async def test_results_are_exact(server: FakeVllmServer, speech16k: GoldenFixture) -> None:
    results = await run_streams(server.url, speech16k.audio, streams=6)
    for result in results:
        assert isinstance(result, pv.StreamResult)
        assert result.probabilities is not None
        assert_silero_probabilities(result.probabilities, speech16k)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert not _vllm_api._Hub._hubs  # the shared client is closed with the engine


async def test_one_shared_client_per_server(server: FakeVllmServer) -> None:
    async with pv.VADEngine("vllm-api", 3, backend_options={"url": server.url}):
        assert len(_vllm_api._Hub._hubs) == 1
        (hub,) = _vllm_api._Hub._hubs.values()
        assert hub.users == 3  # every worker's backend uses the same client


async def test_transient_failures_are_retried(
    server: FakeVllmServer, speech16k: GoldenFixture
) -> None:
    server.fail_first = 3
    (result,) = await run_streams(server.url, speech16k.audio, streams=1, backoff=0.01)
    assert isinstance(result, pv.StreamResult)
    assert segments_as_lists(result.segments) == speech16k.default_segments


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("500", "HTTP 500"),
        ("garbage", "malformed response"),
        ("wrong-size", "not for"),
        ("nan", "NaN"),
        ("huge", "refused"),
        ("drop", "unreachable"),
        ("nested", "nested too deeply"),
    ],
)
async def test_bad_answers_fail_the_streams_clearly(
    server: FakeVllmServer, speech16k: GoldenFixture, mode: str, message: str
) -> None:
    server.mode = mode
    results = await run_streams(
        server.url, speech16k.audio[:64000], streams=2, retries=1, backoff=0.01
    )
    for result in results:
        assert isinstance(result, pv.StreamFailedError)
        assert isinstance(result.__cause__, pv.RemoteBackendError)
        assert message in str(result.__cause__)
        chain: list[type[BaseException]] = []
        link: BaseException | None = result.__cause__
        while link is not None:
            chain.append(type(link))
            link = link.__cause__ or link.__context__
        assert RecursionError not in chain


async def test_a_slow_server_times_out(server: FakeVllmServer, speech16k: GoldenFixture) -> None:
    server.mode, server.delay_s = "slow", 1.0
    (result,) = await run_streams(
        server.url, speech16k.audio[:16000], streams=1, timeout=0.2, retries=1, backoff=0.01
    )
    assert isinstance(result, pv.StreamFailedError)
    assert "timed out after 2 attempts" in str(result.__cause__)


def _prevad_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("prevad-rx")]


#: For the answers refused by size: a deadline far off (below the engine's 30 s), so that
#: only the size cap can end them, however slow the machine (tracemalloc is on).
FAR = 20.0


@pytest.mark.parametrize(
    ("mode", "message", "timeout"),
    [
        ("huge", "refused", FAR),  # 300 MB declared and sent
        ("endless", "refused", FAR),  # chunked, never ends, no size declared
        ("drip", "timed out", 1.0),  # a byte every 0.2 s: each read is quick, it never ends
        ("endless-500", "HTTP 500", FAR),  # an error page that never ends: its start is shown
    ],
)
async def test_huge_endless_and_drip_fed_answers_fail_within_the_deadline(
    server: FakeVllmServer, speech16k: GoldenFixture, mode: str, message: str, timeout: float
) -> None:
    server.mode, server.drip_interval_s = mode, 0.2
    before = _prevad_threads()
    tracemalloc.start()
    try:
        (result,) = await run_streams(
            server.url, speech16k.audio[:16000], streams=1, timeout=timeout, retries=1, backoff=0.01
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the backend's own error, not the engine's watchdog (min_slice_timeout=30 s)
    assert isinstance(result, pv.StreamFailedError)
    assert isinstance(result.__cause__, pv.RemoteBackendError)
    assert message in str(result.__cause__)
    assert peak < 32 << 20  # the client kept at most ~1 MB of each answer
    assert server.bytes_sent < 64 << 20  # it stopped reading: the server could not send more
    assert _prevad_threads() == before and not _vllm_api._Hub._hubs  # nothing outlives the engine
    give_up = time.monotonic() + 10
    while server.open_answers and time.monotonic() < give_up:
        await asyncio.sleep(0.05)
    assert server.open_answers == 0  # the client closed its connections


async def test_credentials_in_the_url_are_never_shown(server: FakeVllmServer) -> None:
    secret = "pa55w0rd"
    host_port = server.url.removeprefix("http://")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://alice:{secret}@127.0.0.1:{probe.getsockname()[1]}"
    server.mode = "500"
    errors: list[BaseException] = []
    for url in (f"http://alice:{secret}@{host_port}", dead):
        backend = pv.create_backend("vllm-api", url=url, retries=0)
        assert secret not in repr(backend) and "alice" not in repr(backend)
        (result,) = await run_streams(url, np.zeros(16000, np.float32), streams=1, retries=0)
        assert isinstance(result, pv.StreamFailedError)
        errors.append(result)
    assert "HTTP 500" in str(errors[0]) and "unreachable" in str(errors[1])
    assert (
        server.headers["Authorization"]
        == "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    )  # the credentials are still used
    with pytest.raises(pv.BackendError) as bad_url:
        pv.create_backend("vllm-api", url=f"ftp://alice:{secret}@{host_port}")
    errors.append(bad_url.value)
    for error in errors:
        shown = ""
        link: BaseException | None = error
        while link is not None:  # every message a traceback of it would print
            shown += "".join(traceback.format_exception_only(link)) + repr(link)
            link = link.__cause__ or link.__context__
        assert secret not in shown and "alice" not in shown
        assert "***@" in shown


async def test_a_failing_stream_does_not_fail_its_neighbours(
    server: FakeVllmServer, speech16k: GoldenFixture
) -> None:
    server.mode = "poison"  # HTTP 500 for requests holding the marked stream's frames
    marked = speech16k.audio.copy()
    marked[100000] = POISON
    async with pv.VADEngine(
        "vllm-api",
        2,
        backend_options={
            "url": server.url,
            "retries": 1,
            "backoff": 0.01,
        },
    ) as engine:
        odd = engine.open_stream("odd")
        good = engine.open_stream("good")

        async def feed(stream: pv.VADStream, audio: np.ndarray) -> pv.StreamResult:
            for start in range(0, audio.size, 16000):
                await stream.push(audio[start : start + 16000])
            return await stream.close()

        outcomes = await asyncio.gather(
            feed(odd, marked), feed(good, speech16k.audio), return_exceptions=True
        )
    assert isinstance(outcomes[0], pv.StreamFailedError)
    assert outcomes[0].stream_id == "odd" and "HTTP 500" in str(outcomes[0])
    assert isinstance(outcomes[1], pv.StreamResult)
    assert segments_as_lists(outcomes[1].segments) == speech16k.default_segments


async def test_api_key(speech16k: GoldenFixture) -> None:
    with FakeVllmServer(api_key="s3cret") as secured:
        (ok,) = await run_streams(secured.url, speech16k.audio[:64000], streams=1, api_key="s3cret")
        (refused,) = await run_streams(
            secured.url, speech16k.audio[:64000], streams=1, retries=3, backoff=0.01
        )
        attempts = secured.requests
    assert isinstance(ok, pv.StreamResult)
    assert isinstance(refused, pv.StreamFailedError) and "HTTP 401" in str(refused.__cause__)
    assert attempts < 10  # a 401 is not retried


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_tls(tmp_path: Path, speech16k: GoldenFixture) -> None:
    key, cert = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeVllmServer(tls=context) as secure:
        assert secure.url.startswith("https://")
        (trusted,) = await run_streams(secure.url, speech16k.audio, streams=1, verify=str(cert))
        (untrusted,) = await run_streams(secure.url, speech16k.audio[:16000], streams=1, retries=0)
    assert isinstance(trusted, pv.StreamResult)
    assert segments_as_lists(trusted.segments) == speech16k.default_segments
    assert isinstance(untrusted, pv.StreamFailedError)  # certificate not trusted


async def test_server_gone_mid_stream(speech16k: GoldenFixture) -> None:
    server = FakeVllmServer().__enter__()
    async with pv.VADEngine(
        "vllm-api",
        2,
        backend_options={
            "url": server.url,
            "retries": 2,
            "backoff": 0.05,
            "timeout": 2.0,
        },
    ) as engine:
        stream = engine.open_stream()
        await stream.push(speech16k.audio[:64000])
        await stream.flush()
        server.kill()  # the server dies while the stream is open
        error: BaseException | None = None
        try:
            for start in range(64000, speech16k.audio.size, 16000):
                await stream.push(speech16k.audio[start : start + 16000])
            await stream.close()
        except pv.StreamFailedError as exc:
            error = exc
    assert isinstance(error, pv.StreamFailedError)
    assert isinstance(error.__cause__, pv.RemoteBackendError)


def test_bad_options() -> None:
    with pytest.raises(pv.BackendError, match="http"):
        pv.create_backend("vllm-api", url="ftp://x")
    with pytest.raises(pv.BackendError):
        pv.create_backend("vllm-api", url="http://x", retries=-1)
    with pytest.raises(pv.BackendError, match="bad options"):
        pv.create_backend("vllm-api")  # url is required


async def test_a_worker_replaced_at_the_engine_deadline_stops_its_request(
    server: FakeVllmServer, speech16k: GoldenFixture
) -> None:
    """The engine's slice deadline (0.5 s) fires long before the backend's own (30 s x 4
    attempts): the pool abandons the stuck backend, which cancels its request, so no thread
    is left blocked in it once the engine has closed."""
    server.mode, server.drip_interval_s = "drip", 0.2
    before = _prevad_threads()
    started = time.monotonic()
    async with pv.VADEngine(
        "vllm-api", 1, backend_options={"url": server.url, "timeout": 30.0}, min_slice_timeout=0.5
    ) as engine:
        stream = engine.open_stream("s")
        await stream.push(speech16k.audio[:16000])
        with pytest.raises(pv.SliceTimeoutError):
            await stream.close()
    give_up = time.monotonic() + 5
    while _prevad_threads() != before and time.monotonic() < give_up:
        await asyncio.sleep(0.05)
    assert _prevad_threads() == before and not _vllm_api._Hub._hubs
    assert time.monotonic() - started < 10  # not the backend's 120 s of attempts
