"""TcpLink against a real loopback TCP peer: reassembly, timeouts that hang up, errors that name the host."""

import asyncio
import socket

import pytest

from possim.terminal.link import LinkError, LinkTimeout, TcpLink
from possim.wire.framing import FrameReader, Framing, FramingError, frame

FRAMING = Framing()


class Peer:
    """A loopback TCP server running `serve(connection_number, reader, writer)` for each connection."""

    def __init__(self, serve):
        self.serve = serve
        self.connections = 0
        self.server = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            await self.serve(self.connections, reader, writer)
        finally:
            writer.close()

    def link(self):
        return TcpLink("127.0.0.1", self.port, FRAMING)


async def read_frames(reader, frames: FrameReader, wanted: int = 1) -> list[bytes]:
    payloads = []
    while len(payloads) < wanted:
        data = await reader.read(4096)
        if not data:
            break
        payloads += frames.feed(data)
    return payloads


async def echo_forever(number, reader, writer):
    frames = FrameReader(FRAMING)
    while True:
        data = await reader.read(4096)
        if not data:
            return
        for payload in frames.feed(data):
            writer.write(frame(FRAMING, b"re:" + payload))


def test_answer_dribbled_byte_by_byte_is_reassembled():
    async def serve(number, reader, writer):
        (request,) = await read_frames(reader, FrameReader(FRAMING))
        for byte in frame(FRAMING, b"answer to " + request):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async def main():
        async with Peer(serve) as peer:
            link = peer.link()
            assert await link.exchange(frame(FRAMING, b"hello"), 5) == b"answer to hello"
            await link.close()

    asyncio.run(main())


def test_stray_frame_coalesced_with_an_answer_is_never_taken_for_the_next_answer():
    async def serve(number, reader, writer):
        frames = FrameReader(FRAMING)
        (request,) = await read_frames(reader, frames)
        writer.write(frame(FRAMING, b"answer " + request) + frame(FRAMING, b"stray"))
        (request,) = await read_frames(reader, frames) or [None]
        if request is not None:
            writer.write(frame(FRAMING, b"answer " + request))
        await reader.read()

    async def main():
        async with Peer(serve) as peer:
            link = peer.link()
            assert await link.exchange(frame(FRAMING, b"one"), 5) == b"answer one"
            assert await link.exchange(frame(FRAMING, b"two"), 5) == b"answer two"
            assert peer.connections == 2
            await link.close()

    asyncio.run(main())


def test_timeout_hangs_up_so_a_late_answer_is_never_read():
    async def main():
        first_closed = asyncio.Event()

        async def serve(number, reader, writer):
            frames = FrameReader(FRAMING)
            (request,) = await read_frames(reader, frames)
            if number == 1:
                assert await reader.read() == b""  # the terminal hung up
                first_closed.set()
                writer.write(frame(FRAMING, b"late " + request))
                return
            writer.write(frame(FRAMING, b"answer " + request))
            await reader.read()

        async with Peer(serve) as peer:
            link = peer.link()
            with pytest.raises(LinkTimeout) as info:
                await link.exchange(frame(FRAMING, b"one"), 0.2)
            assert info.value.sent is True
            assert f"127.0.0.1:{peer.port}" in str(info.value)
            await asyncio.wait_for(first_closed.wait(), 5)
            assert await link.exchange(frame(FRAMING, b"two"), 5) == b"answer two"
            assert peer.connections == 2
            await link.close()

    asyncio.run(main())


def test_refused_connection_names_host_and_port_and_sent_nothing():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main():
        link = TcpLink("127.0.0.1", port, FRAMING)
        with pytest.raises(LinkError) as info:
            await link.exchange(frame(FRAMING, b"hello"), 5)
        return info.value

    error = asyncio.run(main())
    assert error.sent is False
    assert str(error) == f"host 127.0.0.1:{port}: connection refused"


def test_host_hanging_up_before_answering_is_a_link_error_after_sending():
    async def serve(number, reader, writer):
        await read_frames(reader, FrameReader(FRAMING))

    async def main():
        async with Peer(serve) as peer:
            link = peer.link()
            with pytest.raises(LinkError) as info:
                await link.exchange(frame(FRAMING, b"hello"), 5)
            assert not isinstance(info.value, LinkTimeout)
            assert info.value.sent is True
            assert f"127.0.0.1:{peer.port}" in str(info.value)

    asyncio.run(main())


def test_unhonourable_length_raises_framing_error_and_the_next_exchange_starts_clean():
    async def serve(number, reader, writer):
        frames = FrameReader(FRAMING)
        (request,) = await read_frames(reader, frames)
        if number == 1:
            writer.write(b"\xff\xff" + b"x" * 10)
        else:
            writer.write(frame(FRAMING, b"answer " + request))
        await reader.read()

    async def main():
        async with Peer(serve) as peer:
            link = peer.link()
            with pytest.raises(FramingError, match="65535"):
                await link.exchange(frame(FRAMING, b"one"), 5)
            assert await link.exchange(frame(FRAMING, b"two"), 5) == b"answer two"
            assert peer.connections == 2
            await link.close()

    asyncio.run(main())


def test_a_connection_the_host_closed_while_idle_is_reopened():
    async def serve(number, reader, writer):
        (request,) = await read_frames(reader, FrameReader(FRAMING))
        writer.write(frame(FRAMING, b"answer " + request))
        await writer.drain()

    async def main():
        async with Peer(serve) as peer:
            link = peer.link()
            assert await link.exchange(frame(FRAMING, b"one"), 5) == b"answer one"
            for _ in range(500):  # wait until the host's close has reached our side
                if link._reader.at_eof():
                    break
                await asyncio.sleep(0.01)
            assert await link.exchange(frame(FRAMING, b"two"), 5) == b"answer two"
            assert peer.connections == 2
            await link.close()

    asyncio.run(main())


def test_one_link_shared_by_concurrent_callers_keeps_answers_apart():
    async def main():
        async with Peer(echo_forever) as peer:
            link = peer.link()
            requests = [f"request {i}".encode() for i in range(20)]
            answers = await asyncio.gather(*(link.exchange(frame(FRAMING, r), 5) for r in requests))
            assert answers == [b"re:" + r for r in requests]
            assert peer.connections == 1
            await link.close()

    asyncio.run(main())


def test_many_links_in_one_loop():
    async def main():
        async with Peer(echo_forever) as peer:
            links = [peer.link() for _ in range(30)]

            async def talk(i, link):
                return [await link.exchange(frame(FRAMING, f"{i}/{n}".encode()), 5) for n in range(3)]

            results = await asyncio.gather(*(talk(i, link) for i, link in enumerate(links)))
            assert results == [[f"re:{i}/{n}".encode() for n in range(3)] for i in range(30)]
            assert peer.connections == 30
            await asyncio.gather(*(link.close() for link in links))

    asyncio.run(main())
