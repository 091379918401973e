"""Serial links over real pseudo-terminal pairs: the ACK/NAK session against a raw peer that misbehaves on
purpose, a purchase terminal -> serial -> host in every built-in link profile, the serial<->TCP bridge,
and the command line (`possim serial pair`, `host run --serial`, `pos --serial`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
import yaml

from possim.acquirer.core import build_host
from possim.acquirer.serial_server import SerialHostServer
from possim.acquirer.server import HostServer
from possim.fixtures import fixture_path
from possim.terminal.cards import resolve_card
from possim.terminal.profile import load_profile
from possim.terminal.serial_link import SerialLink
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.bridge import SerialTcpBridge
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.framing import Framing
from possim.wire.link_profile import load_link_profile
from possim.wire.pty_pair import PtyPair
from possim.wire.serial_frames import encode_frame, lrc
from possim.wire.serial_port import PortStream, open_port
from possim.wire.serial_session import SerialLinkError, SerialSession, iso_inner_length
from possim.wire.trace import TraceFile

POSSIM = [sys.executable, "-m", "possim.cli"]
QUICK = {"ack_timeout": 0.3, "retries": 2, "inter_byte_timeout": 0.3}
"""Shorter timers than a real line needs, so failures are quick to provoke."""
INNER = Framing(length="binary2")


@pytest.fixture
def pair():
    with PtyPair() as joined:
        yield joined.paths


def quick(name: str):
    return dataclasses.replace(load_link_profile(name), **QUICK)


def framed(data: bytes) -> bytes:
    """An ISO-style message with its 2-byte length header, as `stx-etx-lrc` frames carry it."""
    return len(data).to_bytes(2, "big") + data


class RawPeer:
    """The other end of the cable as bytes only: what it writes is not framed for it."""

    def __init__(self, path: str):
        self.port = serial.Serial(path, 9600, timeout=0.05)

    def write(self, data: bytes) -> None:
        self.port.write(data)

    async def read_until_quiet(self, quiet: float = 0.4) -> bytes:
        """What arrives until the line stays quiet for `quiet` s (read in a thread: the event loop keeps running)."""
        return await asyncio.to_thread(self._read_until_quiet, quiet)

    def _read_until_quiet(self, quiet: float) -> bytes:
        got, last = b"", time.monotonic()
        while time.monotonic() - last < quiet:
            chunk = self.port.read(256)
            if chunk:
                got, last = got + chunk, time.monotonic()
        return got

    def close(self) -> None:
        self.port.close()


async def session_on(path: str, profile) -> SerialSession:
    stream = PortStream(open_port(path, profile), path)
    await stream.start()
    session = SerialSession(stream, profile, path, iso_inner_length(INNER) if profile.iso_length_header else None)
    await session.start()
    return session


def test_a_bad_check_byte_is_nakked_and_the_good_frame_after_it_acked_and_delivered(pair) -> None:
    a, b = pair
    profile = quick("stx-etx-lrc")

    async def main() -> None:
        session, peer = await session_on(a, profile), RawPeer(b)
        try:
            good = encode_frame(profile, framed(b"hello"))
            peer.write(good[:-1] + bytes([good[-1] ^ 0x55]))
            assert await peer.read_until_quiet() == bytes([profile.nak])
            peer.write(b"\x00\xffjunk" + good + b"zz" + encode_frame(profile, framed(b"again")))  # noise between frames
            assert await session.receive(2) == framed(b"hello")
            assert await session.receive(2) == framed(b"again")
            assert await peer.read_until_quiet() == bytes([profile.ack]) * 2
            assert session.bad_frames == 1 and session.noise >= 7
        finally:
            peer.close()
            await session.close()

    asyncio.run(main())


def test_the_sender_retransmits_on_nak_and_gives_up_with_eot(pair) -> None:
    a, b = pair
    profile = quick("stx-len-etx-lrc")

    async def main() -> None:
        session, peer = await session_on(a, profile), RawPeer(b)
        try:
            frame = encode_frame(profile, b"PAYLOAD")
            sending = asyncio.create_task(session.send(b"PAYLOAD"))
            for answer in (profile.nak, profile.nak, profile.ack):
                await asyncio.sleep(0.1)
                peer.write(bytes([answer]))
            await sending
            assert await peer.read_until_quiet() == frame * 3

            with pytest.raises(SerialLinkError, match=r"not acknowledged after 3 tries .*sent EOT") as failed:
                await session.send(b"NOBODY")  # the peer stays silent
            assert failed.value.sent
            assert await peer.read_until_quiet() == encode_frame(profile, b"NOBODY") * 3 + bytes([profile.eot])
        finally:
            peer.close()
            await session.close()

    asyncio.run(main())


@pytest.mark.parametrize("clash", ["etx", "ack"])
def test_a_check_byte_equal_to_etx_or_ack_does_not_end_the_frame_early(pair, clash: str) -> None:
    a, b = pair
    profile = quick("stx-etx-lrc")
    target = getattr(profile, clash)
    data = next(framed(bytes([0x41, x])) for x in range(256) if lrc(profile, b"", framed(bytes([0x41, x]))) == target)

    async def main() -> None:
        sender, receiver = await session_on(b, profile), await session_on(a, profile)
        try:
            await sender.send(data)
            assert await receiver.receive(2) == data
            assert encode_frame(profile, data)[-1] == target
        finally:
            await sender.close()
            await receiver.close()

    asyncio.run(main())


def test_a_peer_falling_silent_mid_frame_is_dropped_and_the_next_frame_survives(pair) -> None:
    a, b = pair
    profile = quick("stx-len-etx-lrc")

    async def main() -> None:
        session, peer = await session_on(a, profile), RawPeer(b)
        try:
            frame = encode_frame(profile, b"COMPLETE")
            peer.write(frame[:6])
            await asyncio.sleep(profile.inter_byte_timeout * 2)
            peer.write(frame)
            assert await session.receive(2) == b"COMPLETE"
            with pytest.raises(SerialLinkError):
                await session.receive(0.3)  # nothing else: the broken frame was dropped, not delivered
        finally:
            peer.close()
            await session.close()

    asyncio.run(main())


def test_an_enq_session_is_opened_before_each_frame_on_a_7e1_line(pair) -> None:
    a, b = pair
    profile = quick("ecr-7e1")

    async def main() -> None:
        sender, receiver = await session_on(b, profile), await session_on(a, profile)
        try:
            await sender.send(b"0200 TEXT ONLY")
            assert await receiver.receive(2) == b"0200 TEXT ONLY"
            with pytest.raises(ValueError, match="offset 1"):
                await sender.send(b"A\x80")  # a 7-bit line carries no byte above 0x7F
        finally:
            await sender.close()
            await receiver.close()

    asyncio.run(main())


def text_only_fixtures(tmp_path: Path) -> Path:
    """Terminal 10000002 without a master key: no MAC, so iso87ascii messages are all text (a 7-bit line)."""
    folder = tmp_path / "fixtures"
    folder.mkdir()
    for name in ("merchants.yaml", "cards.yaml", "accounts.yaml", "host_rules.yaml", "host.yaml"):
        shutil.copy(fixture_path(name), folder / name)
    terminals = yaml.safe_load(fixture_path("terminals.yaml").read_text())
    for entry in terminals["terminals"]:
        if entry["tid"] == "10000002":
            del entry["tmk"]
    (folder / "terminals.yaml").write_text(yaml.safe_dump(terminals))
    return folder


@pytest.mark.parametrize(("link", "dialect", "tid"), [
    ("stx-etx-lrc", "cup", "10000001"),
    ("stx-len-etx-lrc", "iso87binary", "10000001"),
    ("ecr-7e1", "iso87ascii", "10000002"),
])
def test_a_purchase_goes_terminal_serial_host_and_back(pair, tmp_path, link: str, dialect: str, tid: str) -> None:
    a, b = pair
    profile = quick(link)
    fixtures = text_only_fixtures(tmp_path) if tid == "10000002" else None

    async def main() -> None:
        core = build_host(dialect, tmp_path / "journal.sqlite", fixtures)
        host = SerialHostServer(core, a, profile)
        await host.start()
        terminal_profile = load_profile(tid, fixtures, dialect=dialect, timeout=5.0)
        terminal = Terminal(terminal_profile, SerialLink(b, profile, terminal_profile.framing),
                            TerminalState(tid, tmp_path / "t.sqlite"))
        try:
            assert (await terminal.sign_on()).approved
            bought = await terminal.purchase(1250, resolve_card("approve"))
            assert bought.approved, bought.message
            [row] = core.journal.transactions()
            assert (row.amount, row.status, row.terminal_id) == (1250, "approved", tid)
        finally:
            await terminal.link.close()
            terminal.state.close()
            await host.stop()
            core.close()

    asyncio.run(main())


def test_the_bridge_carries_a_purchase_from_a_serial_terminal_to_a_tcp_host(pair, tmp_path) -> None:
    a, b = pair
    profile = quick("stx-etx-lrc")
    dialect = load_dialect("cup")

    async def main() -> None:
        core = build_host(dialect, tmp_path / "journal.sqlite")
        server = HostServer(core)
        host, port = await server.start("127.0.0.1", 0)
        trace = TraceFile(tmp_path / "bridge.log", Codec(dialect), core.clock)
        relay = SerialTcpBridge(a, profile, host, port, dialect, trace=trace, answer_timeout=5.0)
        await relay.start()
        terminal_profile = load_profile("10000001", dialect="cup", timeout=5.0)
        terminal = Terminal(terminal_profile, SerialLink(b, profile, terminal_profile.framing),
                            TerminalState("10000001", tmp_path / "t.sqlite"))
        try:
            assert (await terminal.sign_on()).approved
            assert (await terminal.purchase(3300, resolve_card("approve"))).approved
            assert core.journal.transactions()[0].amount == 3300
        finally:
            await terminal.link.close()
            terminal.state.close()
            await relay.stop()
            trace.close()
            await server.stop()
            core.close()
        text = (tmp_path / "bridge.log").read_text()
        assert text.count("serial->tcp") == 2 and text.count("tcp->serial") == 2
        assert "cup 0200" in text and "cup 0210" in text
        assert "6228480010000000017" not in text and "[redacted" in text  # track 2 crossed the bridge, hidden

    asyncio.run(main())


def test_the_command_line_pairs_ports_and_runs_host_and_terminal_over_them(tmp_path) -> None:
    started: list[subprocess.Popen] = []

    def serve(*args: str) -> dict:
        process = subprocess.Popen([*POSSIM, *args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        line = process.stdout.readline() if process.stdout else ""
        assert line, process.stderr.read() if process.stderr else ""
        return json.loads(line)

    try:
        ports = serve("serial", "pair")
        ready = serve("host", "run", "--serial", ports["a"], "--db", str(tmp_path / "j.sqlite"))
        assert ready["listening"] is None and ready["serial"] == [ports["a"]]
        common = ["--serial", ports["b"], "--state", str(tmp_path / "t.sqlite"), "--json"]
        signon = subprocess.run([*POSSIM, "pos", "signon", *common], capture_output=True, text=True, timeout=60)
        assert json.loads(signon.stdout)["approved"], signon.stderr
        bought = subprocess.run([*POSSIM, "pos", "purchase", "--amount", "7.70", *common],
                                capture_output=True, text=True, timeout=60)
        assert json.loads(bought.stdout)["approved"], bought.stderr
    finally:
        for process in reversed(started):
            process.terminate()
            assert process.wait(timeout=30) == 0


def test_a_missing_port_is_one_line(tmp_path) -> None:
    result = subprocess.run([*POSSIM, "pos", "signon", "--serial", "/dev/nonexistent-possim",
                             "--state", str(tmp_path / "t.sqlite")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == "possim: error: serial port /dev/nonexistent-possim: no such device"
    host = subprocess.run([*POSSIM, "host", "run", "--serial", "/dev/nonexistent-possim", "--db", str(tmp_path / "j.sqlite")],
                          capture_output=True, text=True, timeout=60)
    assert host.returncode == 1 and host.stderr.strip().endswith("serial port /dev/nonexistent-possim: no such device")


def test_a_purchase_nobody_acknowledges_fails_cleanly_and_leaves_its_reversal_owed(pair, tmp_path) -> None:
    a, b = pair
    profile = quick("stx-etx-lrc")

    async def main() -> None:
        peer = RawPeer(a)  # a line that takes bytes and never says ACK
        terminal_profile = load_profile("10000002", dialect="cup", timeout=2.0, reversal_retries=0)
        terminal = Terminal(terminal_profile, SerialLink(b, profile, terminal_profile.framing),
                            TerminalState("10000002", tmp_path / "t.sqlite"))
        try:
            result = await terminal.purchase(1000, resolve_card("approve"))
            assert not result.approved and result.response_code is None
            assert "not acknowledged after 3 tries" in result.message
            owed = terminal.state.pending_reversal()
            assert owed is not None and owed.original_stan == result.stan  # goes before the next request
            assert (await peer.read_until_quiet()).count(bytes([profile.eot])) >= 2  # the purchase, then its reversal
        finally:
            await terminal.link.close()
            terminal.state.close()
            peer.close()

    asyncio.run(main())
