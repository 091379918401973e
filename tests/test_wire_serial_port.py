"""open_port and PortStream over real PTYs (PtyPair), loop:// and socket:// against a real TCP listener."""

from __future__ import annotations

import asyncio
import socket
import termios
import time

import pytest
import serial

from possim.wire.link_profile import LinkProfile, builtin_link_profiles, load_link_profile
from possim.wire.pty_pair import PtyPair
from possim.wire.serial_port import READ_TIMEOUT, WRITE_TIMEOUT, PortStream, SerialPortError, open_port


def line(**settings: object) -> LinkProfile:
    return LinkProfile(name="test", **settings)


@pytest.fixture
def pair():
    ptys = PtyPair()
    paths = ptys.start()
    yield paths
    ptys.stop()


async def read_exactly(stream: PortStream, count: int, deadline: float = 5.0) -> bytes:
    got = bytearray()
    async with asyncio.timeout(deadline):
        while len(got) < count:
            chunk = await stream.read()
            assert chunk, f"stream ended after {len(got)} of {count} bytes"
            got += chunk
    return bytes(got)


# --- open_port -------------------------------------------------------------------------------------------


def test_missing_device_names_the_path():
    with pytest.raises(SerialPortError) as err:
        open_port("/dev/nonexistent-possim", line())
    assert str(err.value) == "serial port /dev/nonexistent-possim: no such device"


def test_second_exclusive_open_of_a_pty_is_busy(pair):
    first = open_port(pair[0], line())
    try:
        with pytest.raises(SerialPortError) as err:
            open_port(pair[0], line())
        assert str(err.value) == f"serial port {pair[0]}: busy (another program has it open exclusively)"
    finally:
        first.close()
    # The lock went with the first port: the path opens again.
    open_port(pair[0], line()).close()


@pytest.mark.parametrize("baud", [-1, 0, "9600", 9600.0, True])
def test_impossible_baud_is_refused(baud):
    with pytest.raises(SerialPortError) as err:
        open_port("loop://", line(), baud=baud)
    assert str(err.value).startswith(f"serial port loop://: baud {baud!r} is not a valid baud rate")


def test_nonstandard_baud_passes_through_to_the_pty(pair):
    # Linux accepts arbitrary rates (BOTHER); pyserial sets 123 on a PTY without complaint, so open_port does too.
    port = open_port(pair[0], line(), baud=123)
    try:
        assert port.baudrate == 123
    finally:
        port.close()


def test_unknown_url_scheme():
    with pytest.raises(SerialPortError, match=r"^serial port bogus://x: unsupported URL"):
        open_port("bogus://x", line())


def test_refused_socket_names_the_url():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port_number = s.getsockname()[1]
    url = f"socket://127.0.0.1:{port_number}"
    with pytest.raises(SerialPortError, match=rf"^serial port {url}: .*Connection refused"):
        open_port(url, line())


@pytest.mark.parametrize("name", builtin_link_profiles())
def test_builtin_profiles_open_with_their_line_settings(name):
    profile = load_link_profile(name)
    port = open_port("loop://", profile)
    try:
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (
            profile.baud, profile.bytesize, profile.parity, profile.stopbits)
        assert port.timeout == READ_TIMEOUT and port.write_timeout == WRITE_TIMEOUT
        assert port.exclusive is True
    finally:
        port.close()


def test_baud_argument_overrides_the_profile():
    port = open_port("loop://", line(baud=9600, bytesize=7, parity="O", stopbits=1.5), baud=19200)
    try:
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (19200, 7, "O", 1.5)
    finally:
        port.close()


def test_profile_settings_reach_the_pty(pair):
    # Read back from the kernel's termios, not from pyserial's attributes. Linux PTYs drop CSIZE and PARENB
    # (the pty driver forces CS8, no parity), so only speed, stop bits and raw mode can be checked here.
    port = open_port(pair[0], line(baud=9600, stopbits=2), baud=19200)
    try:
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(port.fileno())
        assert ispeed == ospeed == termios.B19200
        assert cflag & termios.CSTOPB
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert not iflag & (termios.IXON | termios.ICRNL)
        assert not oflag & termios.OPOST
    finally:
        port.close()
    port = open_port(pair[0], line(baud=115200))
    try:
        cflag, ispeed = termios.tcgetattr(port.fileno())[2:5:2]
        assert ispeed == termios.B115200
        assert not cflag & termios.CSTOPB
    finally:
        port.close()


# --- PortStream ------------------------------------------------------------------------------------------


def test_stream_over_a_pty_pair_both_ways(pair):
    async def main() -> None:
        a = PortStream(open_port(pair[0], line()), "ecr")
        b = PortStream(open_port(pair[1], line()), "terminal")
        await a.start()
        await b.start()
        try:
            frame = b"\x02" + bytes(range(256)) + b"\x03\x03"
            await a.write(frame)
            assert await read_exactly(b, len(frame)) == frame
            await b.write(b"\x06")
            assert await read_exactly(a, 1) == b"\x06"
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_writes_keep_their_order(pair):
    async def main() -> None:
        a = PortStream(open_port(pair[0], line()), "a")
        b = PortStream(open_port(pair[1], line()), "b")
        await a.start()
        await b.start()
        try:
            pieces = [bytes([i]) * 50 for i in range(40)]
            await asyncio.gather(*(a.write(p) for p in pieces))
            assert await read_exactly(b, 2000) == b"".join(pieces)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_loop_url_echoes_through_the_stream():
    async def main() -> None:
        stream = PortStream(open_port("loop://", line()), "loop")
        await stream.start()
        try:
            await stream.write(bytes(range(256)))
            assert await read_exactly(stream, 256) == bytes(range(256))
        finally:
            await stream.close()

    asyncio.run(main())


def test_socket_url_against_a_real_listener():
    listener = socket.create_server(("127.0.0.1", 0))
    url = "socket://127.0.0.1:%d" % listener.getsockname()[1]

    async def main() -> None:
        stream = PortStream(open_port(url, line()), url)
        peer, _ = await asyncio.to_thread(listener.accept)
        await stream.start()
        try:
            peer.sendall(b"\x02hello\x03\x7f")
            assert await read_exactly(stream, 8) == b"\x02hello\x03\x7f"
            await stream.write(b"\x06\x15\x04")
            peer.settimeout(5)
            assert peer.recv(16) == b"\x06\x15\x04"
            peer.close()  # the peer hangs up: the stream ends
            async with asyncio.timeout(5):
                assert await stream.read() == b""
            assert await stream.read() == b""
        finally:
            await stream.close()

    try:
        asyncio.run(main())
    finally:
        listener.close()


def test_stream_ends_when_the_pty_pair_goes_away():
    ptys = PtyPair()
    paths = ptys.start()

    async def main() -> None:
        stream = PortStream(open_port(paths[0], line()), "vanishing")
        await stream.start()
        try:
            ptys.stop()
            async with asyncio.timeout(5):
                assert await stream.read() == b""
        finally:
            await stream.close()

    try:
        asyncio.run(main())
    finally:
        ptys.stop()


def test_write_after_close_names_the_port():
    async def main() -> None:
        stream = PortStream(open_port("loop://", line()), "ecr-port")
        await stream.start()
        await stream.close()
        assert await stream.read() == b""
        with pytest.raises(SerialPortError) as err:
            await stream.write(b"\x05")
        assert str(err.value) == "serial port ecr-port: write to a closed port"

    asyncio.run(main())


def test_write_to_a_port_closed_underneath_the_stream(pair):
    async def main() -> None:
        port = open_port(pair[0], line())
        stream = PortStream(port, "closed-under")
        await stream.start()
        port.close()
        with pytest.raises(SerialPortError, match=r"^serial port closed-under: write to a closed port$"):
            await stream.write(b"\x05")
        async with asyncio.timeout(5):
            assert await stream.read() == b""
        await stream.close()

    asyncio.run(main())


def test_start_refuses_a_closed_port():
    port = serial.serial_for_url("loop://", do_not_open=True)

    async def main() -> None:
        with pytest.raises(SerialPortError, match=r"^serial port never-opened: port is closed$"):
            await PortStream(port, "never-opened").start()

    asyncio.run(main())


def test_write_times_out_when_nobody_reads_the_other_end(pair):
    async def main() -> None:
        port = open_port(pair[0], line())
        port.write_timeout = 0.2
        stream = PortStream(port, "stuck")
        await stream.start()
        started = time.monotonic()
        try:
            # Far more than the PTY buffers plus the copier's 64 KiB per direction: the writer must block.
            with pytest.raises(SerialPortError, match=r"^serial port stuck: write timed out after 0.2s"):
                await stream.write(bytes(4_000_000))
            assert time.monotonic() - started < 5
        finally:
            await stream.close()

    asyncio.run(main())
