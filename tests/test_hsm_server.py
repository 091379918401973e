"""The HSM's TCP front over real sockets on 127.0.0.1: 2-byte length frames, one reply per request.

Replies are checked against published values ([ThalesSim] HostCommandTests, see
tests/test_hsm_device.py) so the bytes on the wire are the ones another test HSM gives.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from possim.hsm_mock.device import Hsm
from possim.hsm_mock.lmk import VariantLmk
from possim.hsm_mock.server import HsmServer

BU_ZPK = b"0001BU011U1EF828AA8F6B80EB83E19FBC373F3A85"
BU_ZPK_REPLY = b"0001BV006F1E3F74F826B7EB"
CW = b"0002CWU9B4934384B19946B040CD702B4D581454123456789012345;8701101"
CW_REPLY = b"0002CX00561"
CA = b"0003CA0406FBB23A5214DFBAB32D775A38E4AB12AE7A708F877571A90101550000025321"
CA_REPLY = b"0003CB0004E98FFDA17099AF5501"


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(size)


def with_server(test: Callable[[tuple[str, int]], Awaitable[None]]) -> None:
    async def main() -> None:
        server = HsmServer(Hsm(VariantLmk.test(), random.Random(1)))
        address = await server.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(test(address), timeout=20)
        finally:
            await server.stop()

    asyncio.run(main())


def test_several_commands_on_one_connection() -> None:
    async def scenario(address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        for request, expected in [(BU_ZPK, BU_ZPK_REPLY), (CW, CW_REPLY), (CA, CA_REPLY)]:
            writer.write(framed(request))
            await writer.drain()
            assert await read_reply(reader) == expected
        writer.write(framed(b"0004NC"))
        nc = await read_reply(reader)
        assert nc.startswith(b"0004ND00") and len(nc) == 8 + 16 + 9
        writer.close()
        await writer.wait_closed()

    with_server(scenario)


def test_garbage_command_then_a_good_one_on_the_same_connection() -> None:
    async def scenario(address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        for garbage, expected in [
            (b"0009Q?\xff\x00junk", b"0009Q@68"),  # unknown command
            (b"0010CWnot-a-key", b"0010CX15"),  # known command, bad fields
            (b"00", b"00ZZ15"),  # not even a command code
        ]:
            writer.write(framed(garbage))
            await writer.drain()
            assert await read_reply(reader) == expected
        writer.write(framed(CW))
        await writer.drain()
        assert await read_reply(reader) == CW_REPLY
        writer.close()
        await writer.wait_closed()

    with_server(scenario)


def test_pipelined_and_split_frames_are_answered_in_order() -> None:
    async def scenario(address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        stream = framed(CA) + framed(b"0005XX") + framed(BU_ZPK)
        writer.write(stream[:3])  # a length header and one byte, then the rest
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(stream[3:])
        await writer.drain()
        assert [await read_reply(reader) for _ in range(3)] == [CA_REPLY, b"0005XY68", BU_ZPK_REPLY]
        writer.close()
        await writer.wait_closed()

    with_server(scenario)


def test_an_unframeable_stream_closes_only_its_own_connection() -> None:
    async def scenario(address: tuple[str, int]) -> None:
        bad_reader, bad_writer = await asyncio.open_connection(*address)
        good_reader, good_writer = await asyncio.open_connection(*address)
        bad_writer.write(b"\xff\xff" + b"x" * 10)  # 65535 bytes announced: above the frame limit
        await bad_writer.drain()
        assert await bad_reader.read() == b""  # closed by the HSM, nothing answered
        good_writer.write(framed(BU_ZPK))
        await good_writer.drain()
        assert await read_reply(good_reader) == BU_ZPK_REPLY
        bad_writer.close()
        good_writer.close()
        await good_writer.wait_closed()

    with_server(scenario)


def test_start_reports_the_bound_port_and_stop_closes_connections() -> None:
    async def main() -> None:
        server = HsmServer(Hsm(VariantLmk.test()))
        host, port = await server.start("127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0 and server.address == (host, port)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(framed(BU_ZPK))
        await writer.drain()
        assert await read_reply(reader) == BU_ZPK_REPLY
        await server.stop()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
        await server.serve_forever()  # returns at once once stopped

    asyncio.run(main())
