"""PtyPair: two real pseudo-terminals joined by a copier thread, driven through pyserial ports."""

from __future__ import annotations

import os
import threading
import time

import pytest
import serial

from possim.wire.link_profile import LinkProfile
from possim.wire.pty_pair import PtyPair
from possim.wire.serial_port import SerialPortError, open_port


def line(**settings: object) -> LinkProfile:
    return LinkProfile(name="test", **settings)


def read_exactly(port: serial.SerialBase, count: int, deadline: float = 5.0) -> bytes:
    got = bytearray()
    end = time.monotonic() + deadline
    while len(got) < count and time.monotonic() < end:
        got += port.read(count - len(got))
    return bytes(got)


@pytest.fixture
def pair():
    ptys = PtyPair()
    paths = ptys.start()
    yield paths
    ptys.stop()


def test_all_256_byte_values_cross_both_ways(pair):
    every_byte = bytes(range(256))
    a = open_port(pair[0], line())
    b = open_port(pair[1], line())
    try:
        a.write(every_byte)
        assert read_exactly(b, 256) == every_byte
        b.write(every_byte[::-1])
        assert read_exactly(a, 256) == every_byte[::-1]
        # Nothing extra arrived (no echo back to the writer, no CR/LF expansion).
        assert a.read(1) == b"" and b.read(1) == b""
    finally:
        a.close()
        b.close()


def test_large_transfers_in_both_directions_at_once_lose_nothing(pair):
    # More than the copier's per-direction buffer plus the kernel's PTY buffers, so back-pressure is exercised.
    a_to_b = os.urandom(300_000)
    b_to_a = os.urandom(300_000)
    a = open_port(pair[0], line())
    b = open_port(pair[1], line())
    received: dict[str, bytes] = {}

    def reader(name: str, port: serial.SerialBase, count: int) -> None:
        received[name] = read_exactly(port, count, deadline=20.0)

    threads = [
        threading.Thread(target=reader, args=("at_b", b, len(a_to_b))),
        threading.Thread(target=reader, args=("at_a", a, len(b_to_a))),
        threading.Thread(target=a.write, args=(a_to_b,)),
        threading.Thread(target=b.write, args=(b_to_a,)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert received["at_b"] == a_to_b
        assert received["at_a"] == b_to_a
    finally:
        a.close()
        b.close()


def test_a_path_can_be_closed_and_opened_again(pair):
    a = open_port(pair[0], line())
    a.close()
    a = open_port(pair[0], line())
    b = open_port(pair[1], line())
    try:
        b.write(b"\x02again\x03")
        assert read_exactly(a, 7) == b"\x02again\x03"
    finally:
        a.close()
        b.close()


def test_stop_removes_the_paths_and_ends_the_copier():
    with PtyPair() as ptys:
        paths = ptys.paths
        assert paths is not None
        assert all(os.path.exists(p) for p in paths)
        assert paths[0] != paths[1]
        copier = ptys._thread
        assert copier is not None and copier.is_alive()
    assert not copier.is_alive()
    assert not any(os.path.exists(p) for p in paths)
    with pytest.raises(SerialPortError, match="no such device"):
        open_port(paths[0], line())


def test_stop_is_idempotent_and_start_twice_is_refused():
    ptys = PtyPair()
    ptys.start()
    with pytest.raises(RuntimeError, match="already started"):
        ptys.start()
    ptys.stop()
    ptys.stop()
