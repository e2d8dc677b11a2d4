"""A stand-in for ``vllm serve`` with the prevad_rx IO processor, on 127.0.0.1, that can misbehave.

It speaks the same ``POST /pooling`` protocol (computing with the ONNX backend),
so the ``vllm-api`` client is tested against a real HTTP server without vLLM, and
it can answer 500s, garbage, wrong sizes, NaN, deeply nested JSON, slowly, not at
all, a body of 300 MB, a body that never ends, one byte at a time, or demand a key.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

import prevad_rx as pv
from prevad_rx.backends import ModelRequest
from prevad_rx.backends.vllm_plugin._protocol import encode_array, parse_request

POISON = 7.0  # mode "poison": requests holding this sample value get HTTP 500
HUGE_BYTES = 300 << 20  # mode "huge": the body's declared and (if read) sent size


class FakeVllmServer:
    """``with FakeVllmServer() as server: server.url``; set ``server.mode`` to misbehave."""

    def __init__(self, *, api_key: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.mode = "ok"
        self.fail_first = 0  # answer 500 to this many requests, then behave
        self.delay_s = 0.0
        self.drip_interval_s = 1.0  # mode "drip": one byte of the answer per interval
        self.bytes_sent = 0  # body bytes written, all requests together
        self.open_answers = 0  # answers being written right now
        self.stopping = threading.Event()
        self.api_key = api_key
        self.requests = 0
        self.headers: dict[str, str] = {}  # of the latest request
        self.lock = threading.Lock()
        self.connections: list[Any] = []
        self.backend = pv.create_backend("onnx")
        self.backend.initialize()
        self.backend_lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections.append(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = server.answer(self.path, dict(self.headers), body)
                if status == 0:  # drop the connection without answering
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                with server.lock:
                    server.open_answers += 1
                try:
                    if server.mode in ("huge", "endless", "drip", "endless-500"):
                        server.misbehave(self, status, payload)
                    else:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                except OSError:  # the client hung up
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.open_answers -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeVllmServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def kill(self) -> None:
        """Die like a killed process: stop listening and drop every open connection."""
        self.__exit__()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                    connection.close()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.requests += 1
            self.headers = headers
            count = self.requests
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, b'{"error": "unauthorized"}'
        if path != "/pooling":
            return 404, b"{}"
        if count <= self.fail_first or self.mode in ("500", "endless-500"):
            return 500, b'{"error": "internal"}'
        if self.mode == "drop":
            return 0, b""
        if self.mode == "slow":
            time.sleep(self.delay_s)
        if self.mode == "garbage":
            return 200, b"<html>not json</html>"
        if self.mode == "nested":  # well-formed, 100 KB, deeper than any parser recurses
            return 200, b'{"data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        windows, state = parse_request(json.loads(body)["data"])
        if self.mode == "poison" and np.any(windows == POISON):
            return 500, b'{"error": "this stream only"}'
        with self.backend_lock:
            (result,) = self.backend.process([ModelRequest(windows, state, 16000)])
        probabilities = result.probabilities
        frames = int(windows.shape[0])
        if self.mode == "nan":
            probabilities = np.full_like(probabilities, np.nan)
        if self.mode == "wrong-size":
            frames += 1
        data = {
            "frames": frames,
            "probabilities": encode_array(probabilities),
            "state": encode_array(result.state),
        }
        return 200, json.dumps({"request_id": "x", "created_at": 0, "data": data}).encode()

    def misbehave(self, handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        """Write an answer badly: 300 MB ("huge"), without end ("endless", "endless-500":
        chunked), or one byte per ``drip_interval_s`` ("drip"); stops when the client hangs up."""
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if self.mode.startswith("endless"):
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            size = HUGE_BYTES if self.mode == "huge" else len(payload)
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        block = b"[" * (64 << 10)
        if self.mode == "drip":
            for index in range(len(payload)):
                if self.stopping.wait(self.drip_interval_s):
                    return
                self._send(handler, payload[index : index + 1])
        elif self.mode == "huge":
            for _ in range(HUGE_BYTES // len(block)):
                self._send(handler, block)
        else:
            chunk = b"%x\r\n%s\r\n" % (len(block), block)
            while not self.stopping.is_set():
                self._send(handler, chunk)

    def _send(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        with self.lock:
            self.bytes_sent += len(data)
