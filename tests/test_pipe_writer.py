"""PipeWriter: framed messages into a pipe from the loop, never blocking it."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

from prevad_rx._pipe_writer import PipeWriter


def test_messages_larger_than_the_pipe_never_block_the_loop_and_arrive_whole_in_order() -> None:
    reader, writer_end = multiprocessing.Pipe(duplex=False)
    messages = [bytes([i]) * size for i, size in enumerate((10, 3_000_000, 1, 200_000, 0, 7))]

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        writer = PipeWriter(writer_end, loop)
        begin = time.perf_counter()
        for message in messages:  # ~3 MB into a 64 KiB pipe nobody reads yet
            writer.send(message)
        assert time.perf_counter() - begin < 1.0  # returned at once: nothing waited
        received: list[bytes] = []
        # the reader drains in a thread while the loop writes what is still queued
        receiving = loop.run_in_executor(
            None, lambda: [received.append(reader.recv_bytes()) for _ in messages]
        )
        await asyncio.wait_for(receiving, 30)
        writer.drain()
        return received

    assert asyncio.run(main()) == messages


def test_drain_writes_what_is_queued_and_a_gone_reader_is_not_an_error() -> None:
    reader, writer_end = multiprocessing.Pipe(duplex=False)

    async def main() -> None:
        writer = PipeWriter(writer_end, asyncio.get_running_loop())
        writer.send(b"x" * 100_000)  # more than the pipe holds: part of it is queued
        received: list[bytes] = []
        loop = asyncio.get_running_loop()
        receiving = loop.run_in_executor(None, lambda: received.append(reader.recv_bytes()))
        writer.drain()  # blocking: the rest goes out now
        await receiving
        assert received == [b"x" * 100_000]
        reader.close()
        writer.send(b"after the reader left")  # broken pipe: dropped, no exception
        writer.drain()
        assert writer.closed

    asyncio.run(main())
