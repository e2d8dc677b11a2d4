"""PipeWriter and PipeReader: framed messages through a pipe on the loop, never blocking it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time

from prevad_rx._pipes import PipeReader, PipeWriter, framed


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


def test_the_reader_hands_on_whole_messages_only_and_never_waits_for_the_rest() -> None:
    """A message that arrives in pieces (its header byte by byte, then its body with the
    last byte held back) is handed on once whole, and the loop runs on meanwhile; several
    messages in one read come out in order; the end of the pipe is reported once."""
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    fd = writer_end.fileno()
    big = bytes(range(256)) * 1000  # more than one read of the reader's

    async def main() -> tuple[list[bytes], int, int]:
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        ended: list[int] = []
        reader = PipeReader(
            reader_end, loop, lambda m: got.append(bytes(m)), lambda: ended.append(1)
        )
        header, body = framed(big)
        for byte in bytes(header):  # the length, one byte at a time
            os.write(fd, bytes([byte]))
            await asyncio.sleep(0.01)
        body = bytes(body)
        for start in range(0, len(body) - 1, 16_000):  # all but the last byte, in pieces
            os.write(fd, body[start : min(start + 16_000, len(body) - 1)])
            await asyncio.sleep(0.01)
        ticks = 0
        for _ in range(5):  # the loop is not blocked by the unfinished message
            await asyncio.sleep(0.01)
            ticks += 1
        assert got == []
        os.write(fd, body[-1:])
        both = b"".join(bytes(part) for m in (b"one", b"") for part in framed(m))
        os.write(fd, both + b"".join(bytes(p) for p in framed(b"three")))
        while len(got) < 4:
            await asyncio.sleep(0.01)
        writer_end.close()
        while not ended:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        reader.close()
        return got, ticks, len(ended)

    got, ticks, ends = asyncio.run(main())
    assert got == [big, b"one", b"", b"three"]
    assert ticks == 5 and ends == 1


def test_a_writer_and_a_reader_on_two_loops_carry_many_messages_in_order() -> None:
    """Writer and reader in different threads' loops: 2,000 messages of mixed sizes (some
    larger than the pipe), all delivered, whole and in order."""
    import threading

    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    sizes = [(i * 7919) % 70_000 for i in range(2000)]
    messages = [bytes([i % 256]) * n for i, n in enumerate(sizes)]

    def write() -> None:
        async def main() -> None:
            writer = PipeWriter(writer_end, asyncio.get_running_loop())
            for message in messages:
                writer.send(message)
                if writer.pending_bytes > 1_000_000:
                    await asyncio.sleep(0.001)  # let the pipe drain now and then
            while writer.pending_bytes:
                await asyncio.sleep(0.001)
            writer_end.close()

        asyncio.run(main())

    async def read() -> list[bytes]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        got: list[bytes] = []
        PipeReader(
            reader_end,
            asyncio.get_running_loop(),
            lambda m: got.append(bytes(m)),
            lambda: done.set_result(None),
        )
        await asyncio.wait_for(done, 60)
        return got

    thread = threading.Thread(target=write)
    thread.start()
    got = asyncio.run(read())
    thread.join()
    assert got == messages
