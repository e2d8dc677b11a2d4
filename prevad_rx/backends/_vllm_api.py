"""Backend ``vllm-api``: the Silero model behind ``vllm serve``, over HTTP.

The server is stateless (each request carries one stream's run of frames and
its LSTM state; the new state comes back), so any number of replicas behind a
load balancer can serve any request. The client:

* shares one ``httpx.AsyncClient`` per server and settings for the whole process
  (connection pool, HTTP keep-alive), driven by one background event-loop thread;
  the pool's worker threads hand it their calls;
* sends every stream of a call concurrently (vLLM batches them), at most
  ``max_concurrency`` requests in flight per server;
* retries connection failures, timeouts and HTTP 5xx/429 with exponential backoff
  (safe: the client still holds the state it sent), then raises
  :class:`~prevad_rx.RemoteBackendError` -- which fails only the streams of that call;
* reads each response as a stream, refusing it past 1 MB while it arrives, and
  gives every attempt one deadline (``timeout``) for connecting, sending and
  reading the whole answer, so a huge, endless or drip-fed answer fails in time;
* validates every response (status, JSON shape and depth, sizes, base64, finite
  values in [0, 1]) and never evaluates or unpickles anything it receives;
* sends ``Authorization: Bearer <api_key>`` when given and verifies TLS for
  ``https://`` URLs (``verify`` may name a CA bundle); credentials in the URL
  are used (HTTP basic auth) but never shown in messages or ``repr``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import ssl
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
import numpy as np

from prevad_rx._errors import BackendError, RemoteBackendError
from prevad_rx.backends._base import Backend, ModelRequest, ModelResult
from prevad_rx.backends._vllm import run_in_rounds
from prevad_rx.backends._vllm_env import SERVED_MODEL_NAME
from prevad_rx.backends.vllm_plugin._protocol import (
    ProtocolError,
    decode_array,
    request_payload,
)

__all__ = ["VllmApiBackend"]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RESPONSE_BYTES = 1 << 20  # a response is ~3 KB; anything this large is wrong
_MAX_ERROR_BYTES = 4096  # of an error answer's body, kept for the message


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    at = rest.rfind("@", 0, end)
    return url if at < 0 else f"{scheme}://***@{rest[at + 1 :]}"


def _secrets(url: str, api_key: str | None) -> list[str]:
    """The strings no message may show: URL credentials (as written and decoded), the key."""
    netloc = urllib.parse.urlsplit(url).netloc if "://" in url else ""
    found = [api_key or ""]
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        parts = [userinfo, *userinfo.split(":", 1)]
        found += parts + [urllib.parse.unquote(part) for part in parts]
    return sorted({f for f in found if len(f) >= 3}, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more (reading stops there)."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_raw():
        parts.append(part)
        size += len(part)
        if size > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


class _Hub:
    """One event loop thread and one ``AsyncClient`` per (url, key, TLS, timeout, limit)."""

    _lock = threading.Lock()
    _hubs: ClassVar[dict[tuple[Any, ...], _Hub]] = {}

    def __init__(
        self,
        key: tuple[Any, ...],
        base_url: str,
        headers: dict[str, str],
        verify: bool | str,
        timeout: float,
        max_concurrency: int,
    ) -> None:
        self.key = key
        self.users = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="prevad-rx-http", daemon=True
        )
        self.thread.start()

        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )

        async def make() -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
            client = httpx.AsyncClient(
                base_url=base_url,
                headers={**headers, "Accept-Encoding": "identity"},  # sizes are what arrives
                verify=tls,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(
                    max_connections=max_concurrency, max_keepalive_connections=max_concurrency
                ),
            )
            return client, asyncio.Semaphore(max_concurrency)

        try:
            self.client, self.gate = self.submit(make()).result()
        except BaseException:
            self._stop()
            raise

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @classmethod
    def acquire(
        cls,
        base_url: str,
        headers: dict[str, str],
        verify: bool | str,
        timeout: float,
        max_concurrency: int,
    ) -> _Hub:
        key = (base_url, tuple(sorted(headers.items())), verify, timeout, max_concurrency)
        with cls._lock:
            hub = cls._hubs.get(key)
            if hub is None:
                hub = cls._hubs[key] = _Hub(
                    key, base_url, headers, verify, timeout, max_concurrency
                )
            hub.users += 1
            return hub

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users:
                return
            del self._hubs[self.key]
        self.submit(self._shutdown()).result(timeout=10)
        self._stop()

    async def _shutdown(self) -> None:
        """Cancel anything still running on the loop, then close the client's connections."""
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class VllmApiBackend(Backend):
    """Silero v6.2 (16 kHz) on a ``vllm serve`` server (``prevad-rx vllm-serve``).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <api_key>``.
        model: served model name (``prevad-silero-vad`` with the launcher).
        timeout: seconds each attempt may take, from connecting to the last byte
            of the answer (one deadline, however slowly the answer trickles in).
        retries: further attempts after a transient failure.
        backoff: first retry delay in seconds (doubles each time).
        max_concurrency: most requests in flight to this server from this process.
        verify: TLS verification (True, False, or a CA bundle path).
    """

    name = "vllm-api"
    sample_rates = frozenset({16000})

    def __init__(
        self,
        *,
        url: str,
        api_key: str | None = None,
        model: str = SERVED_MODEL_NAME,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_concurrency: int = 64,
        verify: bool | str = True,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            shown = _redact(url) if isinstance(url, str) else url
            raise BackendError(f"url must be an http:// or https:// URL, got {shown!r}")
        if retries < 0 or max_concurrency < 1 or timeout <= 0:
            raise BackendError("retries must be >= 0, max_concurrency >= 1 and timeout > 0")
        self._url = url.rstrip("/")
        self._shown_url = _redact(self._url)
        self._secrets = _secrets(self._url, api_key)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._model = model
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_concurrency = max_concurrency
        self._verify = verify
        self._hub: _Hub | None = None
        self._calls_lock = threading.Lock()
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._abandoned = False

    def __repr__(self) -> str:
        return (
            f"VllmApiBackend(url={self._shown_url!r}, model={self._model!r}, "
            f"timeout={self._timeout}, retries={self._retries})"
        )

    def _error(self, message: str) -> RemoteBackendError:
        return RemoteBackendError(_scrub(f"vllm-api: {message}", self._secrets))

    def initialize(self) -> None:
        self._hub = _Hub.acquire(
            self._url, self._headers, self._verify, self._timeout, self._max_concurrency
        )

    def close(self) -> None:
        if self._hub is not None:
            self._hub.release()
            self._hub = None

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        hub = self._hub
        if hub is None:
            raise BackendError("VllmApiBackend used before initialize()")

        def round_trip(batch: list[tuple[np.ndarray, np.ndarray]]) -> list[Any]:
            future = hub.submit(self._gather(hub, batch))
            with self._calls_lock:
                if self._abandoned:
                    future.cancel()
                self._calls.add(future)
            try:
                return future.result()  # type: ignore[no-any-return]
            except concurrent.futures.CancelledError:
                raise self._error("request cancelled: the worker was replaced") from None
            finally:
                with self._calls_lock:
                    self._calls.discard(future)

        return run_in_rounds(requests, round_trip)

    def abandon(self) -> None:
        """Cancel the requests in flight (the pool replaced this worker after a deadline),
        so the stuck worker thread ends now instead of after every retry."""
        with self._calls_lock:
            self._abandoned = True
            calls = list(self._calls)
        for future in calls:
            future.cancel()

    async def _gather(
        self, hub: _Hub, batch: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(await asyncio.gather(*(self._one(hub, w, s) for w, s in batch)))

    async def _one(
        self, hub: _Hub, windows: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        body = {"model": self._model, "data": request_payload(windows, state)}
        frames = int(windows.shape[0])
        delay = self._backoff
        where = f"{self._shown_url}/pooling"
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
            try:
                async with hub.gate:
                    status, content = await self._attempt(hub, body)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if last:
                    raise self._error(
                        f"{where} timed out {tries} (at most {self._timeout:g} s each)"
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise self._error(f"{self._shown_url} unreachable {tries}: {exc!r}") from exc
            else:
                if status == 200:
                    return self._parse(content, frames)
                if status not in _RETRY_STATUS or last:
                    text = content.decode("utf-8", "replace")[:200]
                    raise self._error(f"{where} answered HTTP {status}: {text!r}")
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, hub: _Hub, body: dict[str, Any]) -> tuple[int, bytes]:
        """One request under one deadline: (status, body), the body read as it streams in."""
        async with (
            asyncio.timeout(self._timeout),
            hub.client.stream("POST", "/pooling", json=body) as response,
        ):
            ok = response.status_code == 200
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding != "identity":
                if ok:
                    raise self._error(f"compressed response ({encoding}) refused")
                return response.status_code, b""
            if ok:
                with contextlib.suppress(ValueError):
                    declared = int(response.headers.get("content-length", 0))
                    if declared > _MAX_RESPONSE_BYTES:
                        raise self._error(f"response of {declared} bytes refused")
            limit = _MAX_RESPONSE_BYTES if ok else _MAX_ERROR_BYTES
            content, more = await _read_capped(response, limit)
            if ok and more:
                raise self._error(f"response over {_MAX_RESPONSE_BYTES} bytes refused")
            return response.status_code, content

    def _parse(self, content: bytes, frames: int) -> tuple[np.ndarray, np.ndarray]:
        problem = ""
        try:
            payload = json.loads(content)
        except RecursionError:  # raised below, so no parser internals hang on the error
            problem = "JSON nested too deeply"
        except ValueError as exc:
            problem = str(exc)
        if problem:
            raise self._error(f"malformed response: {problem}")
        try:
            if not isinstance(payload, dict):
                raise ProtocolError(f"expected a JSON object, got {type(payload).__name__}")
            data = payload.get("data")
            if not isinstance(data, dict) or data.get("frames") != frames:
                raise ProtocolError(f"response is not for {frames} frames")
            probabilities = decode_array(data.get("probabilities"), (frames,), "probabilities")
            state = decode_array(data.get("state"), (2, 128), "state")
        except ProtocolError as exc:
            raise self._error(f"malformed response: {exc}") from None
        if not (np.isfinite(probabilities).all() and np.isfinite(state).all()):
            raise self._error("response holds NaN or Inf")
        if probabilities.size and (probabilities.min() < 0 or probabilities.max() > 1):
            raise self._error("probabilities outside [0, 1]")
        return probabilities, state
