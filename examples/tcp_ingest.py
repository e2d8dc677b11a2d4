"""A TCP ingest server: every connection is a stream; speech events go back as JSON lines.

    python examples/tcp_ingest.py serve [--port 9000] [--processes N]  # run the server
    python examples/tcp_ingest.py demo [--clients 4] [--processes N]   # server + clients

Protocol: the client sends raw PCM16-LE mono audio at 16 kHz and half-closes its side
when done; the server answers with one JSON object per speech event
(``{"event": "start"|"end", "time": ..., ...}``) as soon as each is decided, and a
final ``{"event": "done", "segments": N, "pid": ...}``.

With ``--processes 1`` (the default) one ``VADEngine`` serves every connection. With
``--processes N`` (Linux) N worker processes listen on the same port (``SO_REUSEPORT``:
the kernel spreads the connections over them), each with its own one-worker
``VADEngine`` pinned to its own CPU: for many live streams of small packets, one such
process per core holds the most streams (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import prevad_rx as pv

AUDIO = Path(__file__).parent / "audio" / "conversation.wav"
READ_BYTES = 16000 * 2 // 10  # 100 ms of audio per read


async def handle(
    engine: pv.VADEngine, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    host, port = writer.get_extra_info("peername")[:2]
    peer = f"{host}:{port}"
    stream = engine.open_stream(peer, sample_rate=16000)

    def send(event: pv.SpeechEvent) -> None:
        record: dict[str, object] = {"event": event.kind, "time": round(event.time, 3)}
        if event.segment is not None:
            record["segment"] = [round(event.segment.start, 3), round(event.segment.end, 3)]
        if event.error is not None:
            record["error"] = str(event.error)
        writer.write((json.dumps(record) + "\n").encode())

    stream.subscribe(send)
    carry = b""
    try:
        while data := await reader.read(READ_BYTES):
            data = carry + data
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            await stream.push(data[:usable])
        result = await stream.close()
        done = {"event": "done", "segments": len(result.segments), "pid": os.getpid()}
        writer.write((json.dumps(done) + "\n").encode())
        await writer.drain()
    except pv.PrevadError as exc:
        writer.write((json.dumps({"event": "error", "error": str(exc)}) + "\n").encode())
    finally:
        writer.close()


async def serve(port: int, workers: int = 2, reuse_port: bool = False, ready: Any = None) -> None:
    """Serve connections on ``port`` until cancelled; ``ready`` (an event) is set once listening."""
    async with pv.VADEngine(num_workers=workers) as engine:
        server = await asyncio.start_server(
            lambda r, w: handle(engine, r, w), "127.0.0.1", port, reuse_port=reuse_port or None
        )
        print(f"process {os.getpid()} listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}")
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()


def serve_in_process(port: int, cpu: int | None, ready: Any) -> None:
    """One of ``--processes N``: pinned to ``cpu``, a one-worker engine on the shared port."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    pv.run(serve(port, workers=1, reuse_port=True, ready=ready))


def start_processes(port: int, count: int) -> tuple[list[multiprocessing.Process], socket.socket]:
    """``count`` server processes on one port; returns them and a socket that holds the port
    (bound with SO_REUSEPORT, never listening: it only reserves a port when ``port`` is 0)."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", port))
    port = holder.getsockname()[1]
    cpus = sorted(os.sched_getaffinity(0))
    ctx = multiprocessing.get_context("spawn")
    processes, events = [], []
    for i in range(count):
        ready = ctx.Event()
        cpu = cpus[i] if len(cpus) >= count else None
        process = ctx.Process(target=serve_in_process, args=(port, cpu, ready), daemon=True)
        process.start()
        processes.append(process)
        events.append(ready)
    for ready in events:
        if not ready.wait(60):
            raise RuntimeError("a server process did not start listening within 60 s")
    return processes, holder


async def client(port: int, pcm: bytes, name: str, realtime: bool) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    for offset in range(0, len(pcm), READ_BYTES):
        writer.write(pcm[offset : offset + READ_BYTES])
        await writer.drain()
        if realtime:
            due = started + (offset + READ_BYTES) / 32000
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    writer.write_eof()
    segments, pid = 0, 0
    while line := await reader.readline():
        record = json.loads(line)
        print(f"{name}: {record}")
        if record["event"] == "done":
            segments, pid = int(record["segments"]), int(record["pid"])
    writer.close()
    return segments, pid


async def demo(clients: int, realtime: bool, processes: int) -> None:
    audio, rate = sf.read(AUDIO, dtype="float32")
    assert rate == 16000
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

    async def run_clients(port: int) -> list[tuple[int, int]]:
        jobs = (client(port, pcm, f"client-{i}", realtime) for i in range(clients))
        return await asyncio.gather(*jobs)

    if processes == 1:
        async with pv.VADEngine(num_workers=2) as engine:
            server = await asyncio.start_server(lambda r, w: handle(engine, r, w), "127.0.0.1", 0)
            async with server:
                outcomes = await run_clients(server.sockets[0].getsockname()[1])
    else:
        workers, holder = start_processes(0, processes)
        try:
            outcomes = await run_clients(holder.getsockname()[1])
        finally:
            for worker in workers:
                worker.terminate()
                worker.join()
            holder.close()
    counts = [segments for segments, _ in outcomes]
    servers = len({pid for _, pid in outcomes})
    print(f"{clients} clients, segments per client: {counts}, served by {servers} process(es)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve")
    serve_cmd.add_argument("--port", type=int, default=9000)
    demo_cmd = commands.add_parser("demo")
    demo_cmd.add_argument("--clients", type=int, default=4)
    demo_cmd.add_argument("--realtime", action="store_true", help="send at real-time pace")
    for cmd in (serve_cmd, demo_cmd):
        cmd.add_argument("--processes", type=int, default=1, help="server processes (Linux)")
    args = parser.parse_args()
    if args.command == "serve" and args.processes == 1:
        pv.run(serve(args.port))
    elif args.command == "serve":
        servers, _holder = start_processes(args.port, args.processes)
        for server in servers:
            server.join()
    else:
        pv.run(demo(args.clients, args.realtime, args.processes))
