"""Terminal flows over real TCP against a scripted peer that speaks the dialect.

The peer is not the acquirer: it answers (or stays silent, or garbles) on
command, so every branch of the reversal discipline can be made to happen.
End-to-end runs against the real host are in test_terminal_host.py.
"""

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from possim.terminal.cards import resolve_card
from possim.terminal.link import LinkError, TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal, TerminalError
from possim.wire.clock import SteppingClock
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.framing import FrameReader, frame, split_envelope
from possim.wire.message import Message, response_mti

START = datetime(2025, 3, 14, 9, 0, 0)
ECHOED = (3, 4, 7, 11, 12, 13, 25, 41, 42, 49, 60, 70, 90)
HOST_BATCH = "000007"


class IsoPeer:
    """Answers each request by the next action in `plan` ("ok" once the plan runs out).

    Actions: "ok"; a response code such as "51"; "silent" (never answer);
    "garbage" (a body that does not decode); "other-stan" (an answer to
    someone else's request). `on_request` runs before answering, to look at
    the terminal's state file at the moment its request arrived.
    """

    def __init__(self, dialect_name: str, plan: list[str] = (), on_request=None):
        self.dialect = load_dialect(dialect_name)
        self.codec = Codec(self.dialect)
        self.plan = list(plan)
        self.on_request = on_request
        self.received: list[Message] = []
        self.rrn = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        frames = FrameReader(self.dialect.framing)
        try:
            while data := await reader.read(4096):
                for payload in frames.feed(data):
                    envelope, body = split_envelope(self.dialect.framing, payload)
                    request = self.codec.decode(body)
                    self.received.append(request)
                    if self.on_request:
                        self.on_request(request)
                    answer = self._answer(request)
                    if answer is not None:
                        writer.write(frame(self.dialect.framing, answer, envelope.reply()))
        finally:
            writer.close()

    def _answer(self, request: Message) -> bytes | None:
        action = self.plan.pop(0) if self.plan else "ok"
        if action == "silent":
            return None
        if action == "garbage":
            return bytes.fromhex("0210") + b"\xff" * 9
        answer = Message(response_mti(request.mti), {n: request[n] for n in ECHOED if n in request})
        code = "00" if action in ("ok", "other-stan") else action
        answer[39] = code
        if action == "other-stan":
            answer[11] = f"{(int(request[11]) + 500) % 1000000:06d}"
        if request.mti.startswith("02"):
            self.rrn += 1
            answer[37] = f"{self.rrn:012d}"
            if code == "00":
                answer[38] = f"A{self.rrn:05d}"
        if request.mti == "0800":
            self.dialect.set_role(answer, "batch_number", HOST_BATCH)
        return self.codec.encode(answer)

    def mtis(self) -> list[str]:
        return [m.mti for m in self.received]


def make_terminal(path: Path, peer: IsoPeer, dialect: str = "cup", timeout: float = 5.0, retries: int = 2, trace=None):
    profile = load_profile(dialect=dialect, host=f"127.0.0.1:{peer.port}", timeout=timeout, reversal_retries=retries)
    state = TerminalState(profile.tid, path)
    link = TcpLink(*profile.address, profile.framing)
    return Terminal(profile, link, state, SteppingClock(START, timedelta(seconds=1)), trace)


async def finish(terminal: Terminal) -> None:
    await terminal.link.close()
    terminal.state.close()


@pytest.mark.parametrize("dialect, batch", [("cup", 7), ("iso87ascii", 1)])
def test_sign_on_records_the_date_and_the_hosts_batch_number(tmp_path, dialect, batch):
    async def main():
        async with IsoPeer(dialect) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, dialect)
            result = await terminal.sign_on()
            assert (result.mti, result.response_code, result.approved) == ("0810", "00", True)
            assert terminal.dialect.get_role(peer.received[0], "network_code") == ("003" if dialect == "cup" else "001")
            assert terminal.state.signed_on_date == START.date()
            assert terminal.state.batch_number == batch
            await finish(terminal)

    asyncio.run(main())


@pytest.mark.parametrize("dialect", ["cup", "iso87binary"])
def test_approved_purchase_joins_the_batch_and_owes_nothing(tmp_path, dialect):
    async def main():
        async with IsoPeer(dialect) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, dialect)
            result = await terminal.purchase(1250, resolve_card("approve"))
            assert result.approved and result.mti == "0210"
            assert (result.stan, result.amount, result.currency) == ("000001", 1250, "156")
            assert (result.rrn, result.auth_code) == ("000000000001", "A00001")
            assert result.reversal is None
            (entry,) = terminal.state.open_batch()
            assert (entry.stan, entry.amount, entry.rrn, entry.masked_pan) == ("000001", 1250, "000000000001", "622848*********0017")
            assert terminal.state.pending_reversal() is None
            await finish(terminal)

    asyncio.run(main())


def test_declined_purchase_stays_out_of_the_batch(tmp_path):
    async def main():
        async with IsoPeer("cup", ["51"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer)
            result = await terminal.purchase(1250, resolve_card("insufficient"))
            assert (result.approved, result.response_code, result.message) == (False, "51", "insufficient funds")
            assert terminal.state.open_batch() == []
            assert terminal.state.pending_reversal() is None
            await finish(terminal)

    asyncio.run(main())


def test_manual_entry_sends_pan_and_expiry(tmp_path):
    async def main():
        async with IsoPeer("cup") as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer)
            await terminal.purchase(500, resolve_card("approve"), manual=True)
            request = peer.received[0]
            assert (request[2], request[14], request[22]) == ("6228480010000000017", "3012", "012")  # cup: no PIN sent
            assert 35 not in request
            await finish(terminal)

    asyncio.run(main())


def test_reversal_and_stan_are_committed_before_the_request_leaves(tmp_path):
    path = tmp_path / "t.sqlite"
    seen = []

    def look(request):
        if request.mti == "0200":
            with_other_eyes = TerminalState("10000001", path)
            seen.append((with_other_eyes.last_stan, with_other_eyes.pending_reversal()))
            with_other_eyes.close()

    async def main():
        async with IsoPeer("cup", on_request=look) as peer:
            terminal = make_terminal(path, peer)
            await terminal.purchase(1250, resolve_card("approve"))
            assert terminal.state.pending_reversal() is None
            await finish(terminal)

    asyncio.run(main())
    ((stan, owed),) = seen
    assert stan == 1
    assert owed is not None and owed.original_stan == "000001" and owed.reason == "98"


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_no_answer_in_time_is_reversed_at_once(tmp_path, dialect):
    async def main():
        async with IsoPeer(dialect, ["silent"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, dialect, timeout=0.5)
            result = await terminal.purchase(6801, resolve_card("approve"))
            assert result.timed_out and not result.approved and result.mti is None
            assert result.reversal.acknowledged and result.reversal.reason == "98"
            assert result.reversal.mti == "0400" and result.reversal.attempts == 1
            purchase, reversal = peer.received
            assert (purchase.mti, reversal.mti) == ("0200", "0400")
            assert reversal[4] == "000000006801" and reversal[39] == "98"
            if dialect == "cup":
                assert reversal[11] == purchase[11]
            else:
                assert reversal[11] != purchase[11]
                assert reversal[90][:10] == "0200" + purchase[11]
            assert terminal.state.pending_reversal() is None
            assert terminal.state.open_batch() == []
            await finish(terminal)

    asyncio.run(main())


def test_unreadable_or_mismatched_answer_is_reversed_with_reason_96(tmp_path):
    async def main():
        async with IsoPeer("cup", ["garbage", "ok", "other-stan", "ok"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer)
            for amount in (100, 200):
                result = await terminal.purchase(amount, resolve_card("approve"))
                assert not result.approved and not result.timed_out
                assert "unreadable" in result.message
                assert result.reversal.acknowledged and result.reversal.reason == "96"
            assert peer.mtis() == ["0200", "0400", "0200", "0400"]
            assert terminal.state.open_batch() == []
            await finish(terminal)

    asyncio.run(main())


def test_unacknowledged_reversal_survives_and_goes_before_the_next_purchase(tmp_path):
    path = tmp_path / "t.sqlite"

    async def first_process():
        async with IsoPeer("cup", ["silent"] * 4) as peer:
            terminal = make_terminal(path, peer, timeout=0.3, retries=2)
            result = await terminal.purchase(1250, resolve_card("approve"))
            assert result.timed_out
            assert not result.reversal.acknowledged and result.reversal.attempts == 3
            assert peer.mtis() == ["0200", "0400", "0401", "0401"]
            await finish(terminal)

    async def second_process():
        async with IsoPeer("cup") as peer:
            terminal = make_terminal(path, peer)
            assert terminal.state.pending_reversal().attempts == 3
            result = await terminal.purchase(900, resolve_card("approve2"))
            assert peer.mtis() == ["0401", "0200"]
            assert peer.received[0][11] == "000001" and peer.received[1][11] == "000002"
            assert result.prior_reversal.acknowledged and result.approved
            assert terminal.state.pending_reversal() is None
            assert [e.amount for e in terminal.state.open_batch()] == [900]
            await finish(terminal)

    asyncio.run(first_process())
    asyncio.run(second_process())


def test_purchase_is_not_sent_while_the_host_refuses_an_owed_reversal(tmp_path):
    async def main():
        async with IsoPeer("cup", ["silent", "77", "77"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, timeout=0.3)
            first = await terminal.purchase(1250, resolve_card("approve"))
            assert not first.reversal.acknowledged and first.reversal.response_code == "77"
            second = await terminal.purchase(300, resolve_card("approve"))
            assert not second.sent and second.stan is None
            assert "still owed" in second.message and second.prior_reversal.response_code == "77"
            assert peer.mtis() == ["0200", "0400", "0401"]
            assert terminal.state.pending_reversal() is not None
            await finish(terminal)

    asyncio.run(main())


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_reverse_takes_back_the_last_approved_purchase(tmp_path, dialect):
    async def main():
        async with IsoPeer(dialect) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, dialect)
            await terminal.purchase(1000, resolve_card("approve"))
            await terminal.purchase(2000, resolve_card("approve2"))
            result = await terminal.reverse()
            assert result.approved and result.mti == "0410" and result.amount == 2000
            assert result.reversal.reason == "17"
            reversal = peer.received[-1]
            assert reversal.mti == "0400" and reversal[4] == "000000002000"
            assert [e.amount for e in terminal.state.open_batch()] == [1000]
            await terminal.reverse()
            assert terminal.state.open_batch() == []
            with pytest.raises(TerminalError, match="nothing to reverse"):
                await terminal.reverse()
            await finish(terminal)

    asyncio.run(main())


def test_unreachable_host_raises_and_owes_nothing(tmp_path):
    async def main():
        async with IsoPeer("cup") as peer:
            port = peer.port
        profile = load_profile(host=f"127.0.0.1:{port}", timeout=2)
        state = TerminalState(profile.tid, tmp_path / "t.sqlite")
        terminal = Terminal(profile, TcpLink(*profile.address, profile.framing), state)
        with pytest.raises(LinkError, match=f"127.0.0.1:{port}"):
            await terminal.purchase(1250, resolve_card("approve"))
        with pytest.raises(LinkError):
            await terminal.sign_on()
        assert state.pending_reversal() is None
        assert state.last_stan == 2
        state.close()

    asyncio.run(main())


def test_results_serialise_to_json(tmp_path):
    async def main():
        async with IsoPeer("cup", ["silent"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, timeout=0.3)
            timed_out = await terminal.purchase(1250, resolve_card("approve"))
            approved = await terminal.purchase(1250, resolve_card("approve"))
            await finish(terminal)
            return timed_out, approved

    timed_out, approved = asyncio.run(main())
    for result in (timed_out, approved):
        data = json.loads(json.dumps(result.to_json()))
        for key in ("mti", "response_code", "approved", "stan", "rrn", "auth_code", "amount", "currency",
                    "message", "tid", "timed_out", "reversal"):
            assert key in data
    assert json.loads(json.dumps(timed_out.to_json()))["reversal"]["acknowledged"] is True
    assert approved.to_json()["amount"] == 1250 and approved.to_json()["reversal"] is None


def test_no_full_pan_or_track_in_state_files_or_traces(tmp_path):
    traces: list[str] = []
    card = resolve_card("approve")

    async def main():
        async with IsoPeer("iso87ascii", ["ok", "silent", "ok", "silent", "silent", "silent", "silent"]) as peer:
            terminal = make_terminal(tmp_path / "t.sqlite", peer, "iso87ascii", timeout=0.3, retries=1, trace=traces.append)
            await terminal.purchase(1000, card)
            await terminal.purchase(2000, card, manual=True)  # times out, reversed
            await terminal.purchase(3000, card, manual=True)  # times out, reversal left owed
            assert terminal.state.pending_reversal() is not None
            await terminal.link.close()
            return terminal.state

    state = asyncio.run(main())
    files = list(tmp_path.glob("t.sqlite*"))
    raw = b"".join(f.read_bytes() for f in files)  # before close: the WAL still holds the rows
    state.close()
    raw += b"".join(f.read_bytes() for f in tmp_path.glob("t.sqlite*"))
    assert b"622848*********0017" in raw  # the masked PAN is there, so the search is looking at real rows
    for secret in (card.pan, card.track2, card.pan[6:]):
        assert secret.encode() not in raw
    text = "".join(traces)
    assert "622848*********0017" in text
    for secret in (card.pan, card.track2):
        assert secret not in text
