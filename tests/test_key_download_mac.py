"""Working keys at sign-on and a MAC on every purchase, reversal and answer:
the real terminal against the real host over loopback TCP, journal and state
in real SQLite files."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.server import HostServer
from possim.fixtures import load_fixture
from possim.hsm_mock.key_download import clear_key
from possim.hsm_mock.lmk import TAK, TPK, VariantLmk
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.codec import Codec
from possim.wire.framing import FrameReader, frame, split_envelope

DIALECTS = ["cup", "iso87ascii", "iso87binary"]
OPENING = 5_000_000  # A-1001, behind the `approve` card
TID = "10000001"
TMK = bytes.fromhex(next(t["tmk"] for t in load_fixture("terminals.yaml")["terminals"] if t["tid"] == TID))
OTHER_TMK = "1ACDCEA797762F6116C7E9C82C98BF34"


class Host:
    def __init__(self, dialect: str, tmp_path: Path):
        self.core = build_host(dialect, tmp_path / "journal.sqlite")
        self.server = HostServer(self.core, trace=tmp_path / "host-trace.log")
        self.dialect = self.core.dialect

    async def __aenter__(self) -> Host:
        self.address = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        self.core.close()

    def terminal(self, state: Path, port: int | None = None, trace: list[str] | None = None, **overrides) -> Terminal:
        host = self.address[0]
        port = port or self.address[1]
        profile = load_profile(TID, dialect=self.dialect.name, host=f"{host}:{port}", timeout=2.0,
                               reversal_retries=1, **overrides)
        return Terminal(profile, TcpLink(host, port, profile.framing), TerminalState(TID, state),
                        trace=trace.append if trace is not None else None)

    def host_keys(self) -> tuple[bytes, bytes]:
        """The PIN and MAC keys the journal holds (under the LMK), in clear."""
        session = self.core.journal.terminal(TID)
        lmk = VariantLmk.test()
        return (lmk.decrypt(bytes.fromhex(session.pin_key), TPK), lmk.decrypt(bytes.fromhex(session.mac_key), TAK))


def mac_field(fields: dict[str, str]) -> str:
    """Where ISO 8583:1987 puts a message's MAC, given its journaled fields: 128 with a secondary
    bitmap (a field above 64 besides the MAC), else 64; and the other MAC field must be absent."""
    secondary = any(int(n) > 64 for n in fields if n != "128")
    where, other = ("128", "64") if secondary else ("64", "128")
    assert other not in fields
    return where


async def close(terminal: Terminal) -> None:
    await terminal.link.close()
    terminal.state.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sign_on_downloads_keys_and_both_ends_macs_verify(tmp_path, dialect, caplog):
    caplog.set_level(logging.DEBUG, logger="possim")
    trace: list[str] = []

    async def main():
        async with Host(dialect, tmp_path) as host:
            terminal = host.terminal(tmp_path / "t.sqlite", trace=trace)
            assert (await terminal.sign_on()).approved
            stored = terminal.state.working_keys()
            assert stored is not None
            pin_key, mac_key = host.host_keys()
            assert (clear_key(TMK, stored[0]), clear_key(TMK, stored[1])) == (pin_key, mac_key)
            assert pin_key != mac_key
            result = await terminal.purchase(1250, resolve_card("approve"))
            assert result.approved and result.reversal is None  # the terminal took the host's MAC
            assert host.core.journal.balance("A-1001") == OPENING - 1250
            answers = [m for m in host.core.journal.messages(TID) if m.mti == "0210"]
            requests = [m for m in host.core.journal.messages(TID) if m.mti == "0200"]
            assert mac_field(answers[-1].fields) in answers[-1].fields
            assert mac_field(requests[-1].fields) in requests[-1].fields
            signons = [m for m in host.core.journal.messages(TID) if m.mti in ("0800", "0810")]
            assert not any("64" in m.fields for m in signons)  # sign-ons carry no MAC
            cancelled = await terminal.reverse()
            assert cancelled.approved and host.core.journal.balance("A-1001") == OPENING
            reversals = [m for m in host.core.journal.messages(TID) if m.mti in ("0400", "0410")][-2:]
            for reversal in reversals:
                assert mac_field(reversal.fields) in reversal.fields, reversal.mti
                if dialect != "cup":  # iso87 reversals carry field 90, so the MAC must be in 128
                    assert "90" in reversal.fields and "128" in reversal.fields, reversal.mti
            await close(terminal)
            return pin_key, mac_key

    keys = asyncio.run(main())
    secrets = [TMK, *keys]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") or p.name.endswith(".sqlite") for p in files)
    written = b"".join(p.read_bytes() for p in files) + "".join(trace).encode() + caplog.text.encode()
    for secret in secrets:
        for form in (secret, secret.hex().upper().encode(), secret.hex().encode()):
            assert form not in written


def _tampered(terminal: Terminal, amount: int) -> bytes:
    from possim.terminal.messages import build_purchase

    request = build_purchase(
        terminal.dialect, tid=TID, mid=terminal.profile.mid, stan=terminal.state.next_stan(), now=terminal.clock(),
        amount=amount, currency="156", card=resolve_card("approve"), manual=False, pin_pad=True,
        batch_number=terminal.state.batch_number,
    )
    body = bytearray(terminal.encode(request))
    assert int(mac_field({str(n): v for n, v in request.fields.items()})) in request
    _, end = terminal.codec.spans(bytes(body))["4"]
    body[end - 1] ^= 0x01  # 1000 becomes 1001: a valid amount, not the one MACed
    return bytes(body)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_tampered_purchase_is_refused_and_posts_nothing(tmp_path, dialect):
    async def main():
        async with Host(dialect, tmp_path) as host:
            terminal = host.terminal(tmp_path / "t.sqlite")
            assert (await terminal.sign_on()).approved
            body = _tampered(terminal, 1000)
            payload = await terminal.link.exchange(frame(terminal.framing, body), 2.0)
            answer = terminal.codec.decode(split_envelope(terminal.framing, payload)[1])
            assert answer[39] == {"cup": "A0"}.get(dialect, "63")
            assert host.core.journal.balance("A-1001") == OPENING
            [txn] = host.core.journal.transactions()
            assert (txn.decline_step, txn.posted_amount, txn.amount) == ("mac", 0, 1001)
            # Unmangled, the same terminal is served as usual.
            assert (await terminal.purchase(1000, resolve_card("approve"))).approved
            assert host.core.journal.balance("A-1001") == OPENING - 1000
            await close(terminal)

    asyncio.run(main())


class TamperingProxy:
    """Forwards bytes both ways, changing one digit of the amount in every 0210 on its way back."""

    def __init__(self, host: Host):
        self.host = host
        self.codec = Codec(host.dialect)
        self.framing = host.dialect.framing

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.host.address)

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        task = asyncio.create_task(upstream())
        frames = FrameReader(self.framing)
        try:
            while data := await up_reader.read(65536):
                for payload in frames.feed(data):
                    envelope, body = split_envelope(self.framing, payload)
                    if self.codec.decode(body).mti == "0210":
                        changed = bytearray(body)
                        _, end = self.codec.spans(body)["4"]
                        changed[end - 1] ^= 0x01
                        body = bytes(changed)
                    writer.write(frame(self.framing, body, envelope))
                await writer.drain()
        finally:
            task.cancel()
            writer.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_tampered_answer_makes_the_terminal_reverse(tmp_path, dialect):
    async def main():
        async with Host(dialect, tmp_path) as host:
            proxy = TamperingProxy(host)
            port = await proxy.start()
            terminal = host.terminal(tmp_path / "t.sqlite", port=port)
            assert (await terminal.sign_on()).approved
            result = await terminal.purchase(1000, resolve_card("approve"))
            assert not result.approved and result.response_code is None
            assert "MAC" in result.message
            assert result.reversal is not None and result.reversal.acknowledged and result.reversal.reason == "96"
            assert host.core.journal.balance("A-1001") == OPENING  # the host approved, then took it back
            assert terminal.state.pending_reversal() is None and terminal.state.open_batch() == []
            await close(terminal)
            await proxy.stop()

    asyncio.run(main())


@pytest.mark.parametrize("dialect", ["cup", "iso87binary"])
def test_keys_that_fail_their_check_values_are_not_taken(tmp_path, dialect):
    async def main():
        async with Host(dialect, tmp_path) as host:
            terminal = host.terminal(tmp_path / "t.sqlite", tmk=OTHER_TMK)  # not the TMK the host has on file
            result = await terminal.sign_on()
            assert not result.approved and result.response_code == "00"
            assert "check value does not match" in result.message and "keys not stored" in result.message
            assert terminal.state.working_keys() is None and terminal.state.signed_on_date is None
            await close(terminal)

    asyncio.run(main())


def test_a_terminal_with_keys_must_mac(tmp_path):
    """An unMACed purchase from a terminal the host has keys for is refused."""

    async def main():
        async with Host("iso87ascii", tmp_path) as host:
            keyed = host.terminal(tmp_path / "t.sqlite")
            assert (await keyed.sign_on()).approved
            await close(keyed)
            profile = replace(keyed.profile, tmk=None)  # same terminal, its master key forgotten
            bare = Terminal(profile, TcpLink(*host.address, profile.framing), TerminalState(TID, tmp_path / "t.sqlite"))
            result = await bare.purchase(1000, resolve_card("approve"))
            assert result.response_code == "63" and host.core.journal.balance("A-1001") == OPENING
            await close(bare)

    asyncio.run(main())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_new_sign_on_retires_the_old_mac_key(tmp_path, dialect):
    """The host keeps each terminal's clear MAC key in memory once unwrapped; a second sign-on must replace it:
    a purchase MACed under the first key is refused, and one under the new key is approved and answered under it."""
    from possim.hsm_mock.message_mac import MessageMac
    from possim.terminal.messages import build_purchase

    async def main():
        async with Host(dialect, tmp_path) as host:
            terminal = host.terminal(tmp_path / "t.sqlite")
            assert (await terminal.sign_on()).approved
            assert (await terminal.purchase(1000, resolve_card("approve"))).approved  # the host has used (and kept) key 1
            _, first_key = host.host_keys()
            assert (await terminal.sign_on()).approved
            _, second_key = host.host_keys()
            assert second_key != first_key
            request = build_purchase(
                terminal.dialect, tid=TID, mid=terminal.profile.mid, stan=terminal.state.next_stan(),
                now=terminal.clock(), amount=700, currency="156", card=resolve_card("approve"), manual=False,
                pin_pad=True, batch_number=terminal.state.batch_number,
            )
            body = MessageMac(terminal.codec).sign(request, first_key)
            payload = await terminal.link.exchange(frame(terminal.framing, body), 2.0)
            answer = terminal.codec.decode(split_envelope(terminal.framing, payload)[1])
            assert answer[39] == {"cup": "A0"}.get(dialect, "63")
            assert host.core.journal.balance("A-1001") == OPENING - 1000
            # The terminal, which took the second keys, is served (its answer's MAC checked under them).
            assert (await terminal.purchase(500, resolve_card("approve"))).approved
            assert host.core.journal.balance("A-1001") == OPENING - 1500
            await close(terminal)

    asyncio.run(main())
