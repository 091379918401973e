"""The frame proxy between real sockets: a client, the proxy and an upstream server that answers each frame,
all on ephemeral loopback ports."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from possim.wire.framing import FrameReader, Framing, frame
from possim.wire.proxy import Exchange, FrameProxy, ProxyFault

FRAMING = Framing()


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog):
    """A connection the proxy ends, however it ends, leaves nothing for asyncio to complain about."""
    yield
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


class Upstream:
    """Answers each frame with `A:` + its payload; stays silent on `mute`, answers garbage to `junk`."""

    def __init__(self, framing: Framing = FRAMING) -> None:
        self.framing = framing
        self.received: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        frames = FrameReader(self.framing)
        while data := await reader.read(4096):
            for payload in frames.feed(data):
                self.received.append(payload)
                if payload == b"mute":
                    continue
                writer.write(b"\xff\xff" if payload == b"junk" else frame(self.framing, b"A:" + payload))
                await writer.drain()
        self.closed += 1
        writer.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: Framing):
        self.reader, self.writer, self.framing = reader, writer, framing
        self.frames = FrameReader(framing)
        self.ready: list[bytes] = []

    @classmethod
    async def connect(cls, address: tuple[str, int], framing: Framing = FRAMING) -> Client:
        return cls(*await asyncio.open_connection(*address), framing)

    @property
    def peer(self) -> str:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def send(self, payload: bytes) -> None:
        self.writer.write(frame(self.framing, payload))

    async def answer(self, timeout: float = 5.0) -> bytes | None:
        """The next answer's payload; None at EOF. TimeoutError when none comes in time."""
        async with asyncio.timeout(timeout):
            while not self.ready:
                data = await self.reader.read(4096)
                if not data:
                    return None
                self.ready.extend(self.frames.feed(data))
        return self.ready.pop(0)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class Rig:
    def __init__(self, faults: dict[bytes, ProxyFault] | None = None, framing: Framing = FRAMING):
        self.upstream = Upstream(framing)
        self.exchanges: list[Exchange] = []
        self.asked: list[tuple[str, bytes]] = []
        self.faults = faults or {}
        self.framing = framing

    def _on_request(self, peer: str, whole: bytes) -> ProxyFault | None:
        self.asked.append((peer, whole))
        return self.faults.get(whole[2:])

    async def __aenter__(self) -> Rig:
        upstream = await self.upstream.start()
        self.proxy = FrameProxy(upstream, self.framing, on_request=self._on_request, on_exchange=self.exchanges.append)
        self.address = await self.proxy.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.proxy.stop()
        await self.upstream.stop()

    async def settled(self, count: int) -> list[Exchange]:
        async with asyncio.timeout(5):
            while len(self.exchanges) < count:
                await asyncio.sleep(0.01)
        return self.exchanges


def test_a_frame_goes_up_and_its_answer_comes_back_whole():
    async def main():
        async with Rig() as rig:
            client = await Client.connect(rig.address)
            client.send(b"hello")
            assert await client.answer() == b"A:hello"
            (exchange,) = await rig.settled(1)
            assert exchange.peer == client.peer
            assert exchange.request == b"\x00\x05hello"
            assert exchange.response == b"\x00\x07A:hello"
            assert exchange.fault is None and exchange.answered_at is not None
            assert exchange.answered_at >= exchange.sent_at
            assert rig.asked == [(client.peer, b"\x00\x05hello")]
            assert rig.upstream.received == [b"hello"]
            await client.close()

    asyncio.run(main())


def test_frames_cut_anywhere_or_run_together_are_forwarded_as_whole_frames():
    async def main():
        async with Rig() as rig:
            client = await Client.connect(rig.address)
            data = frame(FRAMING, b"one") + frame(FRAMING, b"two")
            for byte in data[:4]:
                client.writer.write(bytes([byte]))
                await client.writer.drain()
                await asyncio.sleep(0.02)
            client.writer.write(data[4:])
            assert [await client.answer(), await client.answer()] == [b"A:one", b"A:two"]
            assert [e.request for e in await rig.settled(2)] == [b"\x00\x03one", b"\x00\x03two"]
            await client.close()

    asyncio.run(main())


def test_two_clients_each_get_their_own_answers_in_order():
    async def main():
        async with Rig() as rig:
            first, second = await Client.connect(rig.address), await Client.connect(rig.address)
            for n in range(3):
                first.send(b"first-%d" % n)
                second.send(b"second-%d" % n)
            assert [await first.answer() for _ in range(3)] == [b"A:first-0", b"A:first-1", b"A:first-2"]
            assert [await second.answer() for _ in range(3)] == [b"A:second-0", b"A:second-1", b"A:second-2"]
            exchanges = await rig.settled(6)
            assert rig.upstream.connections == 2
            for exchange in exchanges:
                assert exchange.response == frame(FRAMING, b"A:" + exchange.request[2:])
                owner = first if exchange.request[2:].startswith(b"first") else second
                assert exchange.peer == owner.peer
            await first.close()
            await second.close()

    asyncio.run(main())


def test_a_delayed_answer_is_held_at_least_that_long_then_delivered():
    async def main():
        async with Rig({b"slow": ProxyFault("delay", 0.4)}) as rig:
            client = await Client.connect(rig.address)
            started = time.monotonic()
            client.send(b"slow")
            assert await client.answer() == b"A:slow"
            assert time.monotonic() - started >= 0.4
            client.send(b"quick")
            started = time.monotonic()
            assert await client.answer() == b"A:quick"
            assert time.monotonic() - started < 0.4
            slow, quick = await rig.settled(2)
            assert (slow.fault, slow.response) == ("delay", b"\x00\x06A:slow")
            assert quick.fault is None
            await client.close()

    asyncio.run(main())


def test_a_delayed_answer_whose_client_has_gone_is_discarded():
    async def main():
        async with Rig({b"slow": ProxyFault("delay", 0.5)}) as rig:
            client = await Client.connect(rig.address)
            client.send(b"slow")
            await asyncio.sleep(0.1)
            await client.close()
            (exchange,) = await rig.settled(1)
            assert (exchange.fault, exchange.response) == ("delay", None)
            assert exchange.answered_at is not None  # the host did answer
            assert rig.upstream.received == [b"slow"]

    asyncio.run(main())


def test_a_dropped_answer_never_reaches_the_client_and_the_next_answer_is_not_taken_for_it():
    async def main():
        async with Rig({b"lost": ProxyFault("drop")}) as rig:
            client = await Client.connect(rig.address)
            client.send(b"lost")
            with pytest.raises(TimeoutError):
                await client.answer(timeout=0.5)
            assert rig.upstream.received == [b"lost"]
            client.send(b"next")
            assert await client.answer() == b"A:next"
            lost, following = await rig.settled(2)
            assert (lost.fault, lost.response, lost.request) == ("drop", None, b"\x00\x04lost")
            assert lost.answered_at is not None
            assert following.response == b"\x00\x06A:next"
            await client.close()

    asyncio.run(main())


def test_close_lets_the_host_act_then_hangs_up_on_the_client_and_the_host():
    async def main():
        async with Rig({b"bye": ProxyFault("close")}) as rig:
            client = await Client.connect(rig.address)
            client.send(b"bye")
            assert await client.answer() is None  # EOF, not the answer
            assert rig.upstream.received == [b"bye"]
            (exchange,) = await rig.settled(1)
            assert (exchange.fault, exchange.response) == ("close", None) and exchange.answered_at is not None
            async with asyncio.timeout(5):
                while rig.upstream.closed < 1:
                    await asyncio.sleep(0.01)

    asyncio.run(main())


def test_an_upstream_that_refuses_closes_the_client(caplog):
    async def main():
        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
        spare.close()  # nothing listens there now
        exchanges: list[Exchange] = []
        proxy = FrameProxy(("127.0.0.1", port), FRAMING, on_exchange=exchanges.append)
        address = await proxy.start()
        client = await Client.connect(address)
        client.send(b"anyone")
        assert await client.answer() is None
        await proxy.stop()
        assert exchanges == []

    with caplog.at_level(logging.INFO, logger="possim.proxy"):
        asyncio.run(main())
    (record,) = [r for r in caplog.records if r.name == "possim.proxy"]
    assert "127.0.0.1:" in record.getMessage() and "refused" in record.getMessage()


def test_a_garbage_length_header_closes_that_pair_only(caplog):
    framing = Framing(length="ascii4")

    async def main():
        async with Rig(framing=framing) as rig:
            good = await Client.connect(rig.address, framing)
            bad = await Client.connect(rig.address, framing)
            bad.writer.write(b"XY12whatever")
            assert await bad.answer() is None
            good.send(b"abc")
            assert await good.answer() == b"A:abc"
            assert [(e.peer, e.request) for e in await rig.settled(1)] == [(good.peer, b"0003abc")]
            assert rig.upstream.received == [b"abc"]
            await good.close()

    with caplog.at_level(logging.INFO, logger="possim.proxy"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "possim.proxy" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "length header" in lines[0] and "the client" in lines[0]


def test_garbage_from_upstream_ends_the_pair_and_the_request_is_reported_unanswered(caplog):
    async def main():
        async with Rig() as rig:
            client = await Client.connect(rig.address)
            other = await Client.connect(rig.address)
            client.send(b"junk")
            assert await client.answer() is None
            (exchange,) = await rig.settled(1)
            assert exchange.response is None and exchange.request == b"\x00\x04junk"
            other.send(b"fine")
            assert await other.answer() == b"A:fine"
            await other.close()

    with caplog.at_level(logging.INFO, logger="possim.proxy"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "possim.proxy" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "from upstream" in lines[0]


def test_stop_reports_requests_still_owed_an_answer():
    async def main():
        async with Rig() as rig:
            client = await Client.connect(rig.address)
            client.send(b"mute")
            async with asyncio.timeout(5):
                while not rig.upstream.received:
                    await asyncio.sleep(0.01)
            await rig.proxy.stop()
            assert [(e.request, e.response, e.answered_at) for e in rig.exchanges] == [(b"\x00\x04mute", None, None)]
            assert await client.answer() is None

    asyncio.run(main())


def test_a_fault_kind_must_be_known():
    with pytest.raises(ValueError, match="delay, drop, close"):
        ProxyFault("lose")
