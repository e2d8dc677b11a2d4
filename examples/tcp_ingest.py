"""A TCP ingest server: every connection is a stream; speech events go back as JSON lines.

    python examples/tcp_ingest.py serve [--port 9000]      # run the server
    python examples/tcp_ingest.py demo [--clients 4]       # server + clients, then exit

Protocol: the client sends raw PCM16-LE mono audio at 16 kHz and half-closes its side
when done; the server answers with one JSON object per speech event
(``{"event": "start"|"end", "time": ..., ...}``) as soon as each is decided, and a
final ``{"event": "done", "segments": N}``. One ``VADEngine`` serves all connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

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
        writer.write(
            (json.dumps({"event": "done", "segments": len(result.segments)}) + "\n").encode()
        )
        await writer.drain()
    except pv.PrevadError as exc:
        writer.write((json.dumps({"event": "error", "error": str(exc)}) + "\n").encode())
    finally:
        writer.close()


async def serve(port: int) -> None:
    async with pv.VADEngine(num_workers=2) as engine:
        server = await asyncio.start_server(lambda r, w: handle(engine, r, w), "127.0.0.1", port)
        print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with server:
            await server.serve_forever()


async def client(port: int, pcm: bytes, name: str, realtime: bool) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    for offset in range(0, len(pcm), READ_BYTES):
        writer.write(pcm[offset : offset + READ_BYTES])
        await writer.drain()
        if realtime:
            due = started + (offset + READ_BYTES) / 32000
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    writer.write_eof()
    segments = 0
    while line := await reader.readline():
        record = json.loads(line)
        print(f"{name}: {record}")
        if record["event"] == "done":
            segments = int(record["segments"])
    writer.close()
    return segments


async def demo(clients: int, realtime: bool) -> None:
    audio, rate = sf.read(AUDIO, dtype="float32")
    assert rate == 16000
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with pv.VADEngine(num_workers=2) as engine:
        server = await asyncio.start_server(lambda r, w: handle(engine, r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            counts = await asyncio.gather(
                *(client(port, pcm, f"client-{i}", realtime) for i in range(clients))
            )
    print(f"{clients} clients, segments per client: {counts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve")
    serve_cmd.add_argument("--port", type=int, default=9000)
    demo_cmd = commands.add_parser("demo")
    demo_cmd.add_argument("--clients", type=int, default=4)
    demo_cmd.add_argument("--realtime", action="store_true", help="send at real-time pace")
    args = parser.parse_args()
    if args.command == "serve":
        pv.run(serve(args.port))
    else:
        pv.run(demo(args.clients, args.realtime))
