"""Group commit: the requests of one event-loop turn share a journal commit,
and every answer the core hands back is already committed."""

from __future__ import annotations

import socket
import sqlite3

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.journal import AccountBalance, Journal, JournalError, MessageEntry, Posting, Unit
from possim.wire.codec import Codec
from possim.wire.framing import frame, split_envelope
from possim.wire.message import Message
from possim.hsm_mock.key_download import unpack
from possim.hsm_mock.message_mac import MessageMac
from host_support import DIALECTS, MACED_KINDS, OPENING, TMKS, host_clock, purchase, running_host, sign_on

_MAC_KEYS: dict[int, bytes] = {}
"""The working MAC key each core's sign-on sent, by id(core)."""


def _payload(core, message: Message) -> bytes:
    """What FrameReader hands the core: the frame without its length header (MACed once keys were sent)."""
    codec = Codec(core.dialect)
    key = _MAC_KEYS.get(id(core))
    body = MessageMac(codec).sign(message, key) if key and message.mti[1:3] in MACED_KINDS else codec.encode(message)
    return frame(core.framing, body)[core.framing.length_size:]


def _answer(core, reply) -> Message:
    _, body = split_envelope(core.framing, reply.data[core.framing.length_size:])
    return Codec(core.dialect).decode(body)


@pytest.fixture
def core(tmp_path):
    core = build_host("cup", tmp_path / "journal.sqlite", clock=host_clock())
    answer = _answer(core, core.handle(_payload(core, sign_on(core.dialect, "000001"))))
    assert answer[39] == "00"
    _MAC_KEYS[id(core)] = unpack(TMKS[answer[41]], bytes.fromhex(answer[62]))[1].mac_key
    yield core
    del _MAC_KEYS[id(core)]
    core.close()


def test_answers_of_a_batch_are_committed_when_handed_back(core, tmp_path):
    arrivals = [(f"127.0.0.1:{5000 + n}", [_payload(core, purchase(core.dialect, f"{n:06d}", amount=100 * n))])
                for n in (2, 3, 4)]
    answers = core.handle_batch(arrivals)
    assert [[_answer(core, r)[39] for r in replies] for replies in answers] == [["00"], ["00"], ["00"]]
    reader = Journal(tmp_path / "journal.sqlite")  # another connection sees only what is committed
    try:
        assert [t.stan for t in reader.transactions()] == ["000002", "000003", "000004"]
        assert reader.balance("A-1001") == OPENING["A-1001"] - 900
        assert [(m.direction, m.stan) for m in reader.messages() if m.mti in ("0200", "0210")] == [
            ("in", "000002"), ("out", "000002"), ("in", "000003"), ("out", "000003"), ("in", "000004"), ("out", "000004"),
        ]
    finally:
        reader.close()


def test_a_failing_write_costs_its_batch_a_retry_not_a_wrong_answer(core, tmp_path):
    # A real write failure, from SQLite itself, after the request's transaction row is already written.
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        db.execute("CREATE TRIGGER refuse_777 BEFORE UPDATE OF balance ON accounts WHEN NEW.balance = OLD.balance - 777"
                   " BEGIN SELECT RAISE(ABORT, 'refused for the test'); END")
    arrivals = [("a", [_payload(core, purchase(core.dialect, "000002", amount=100))]),
                ("b", [_payload(core, purchase(core.dialect, "000003", amount=777))]),
                ("c", [_payload(core, purchase(core.dialect, "000004", amount=200))])]
    codes = [_answer(core, replies[0])[39] for replies in core.handle_batch(arrivals)]
    assert codes == ["00", "96", "00"]
    rows = core.journal.transactions()
    assert [(t.stan, t.response_code) for t in rows] == [("000002", "00"), ("000004", "00")]
    assert core.journal.balance("A-1001") == OPENING["A-1001"] - 300
    logged = [(m.direction, m.stan) for m in core.journal.messages() if m.mti in ("0200", "0210")]
    assert logged == [("in", "000002"), ("out", "000002"), ("in", "000004"), ("out", "000004")]  # once each
    assert len({t.rrn for t in rows}) == 2


def test_frames_after_one_that_closes_the_connection_are_not_handled(core):
    no_stan = Message("0200", {3: "000000", 4: "000000000100", 41: "10000001"})
    arrivals = [("a", [_payload(core, no_stan), _payload(core, purchase(core.dialect, "000002"))]),
                ("b", [_payload(core, purchase(core.dialect, "000003"))])]
    first, second = core.handle_batch(arrivals)
    assert [(r.data, r.close) for r in first] == [(None, True)]
    assert _answer(core, second[0])[39] == "00"
    assert [t.stan for t in core.journal.transactions()] == ["000003"]


def test_journal_batch_is_all_or_nothing(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    journal.seed_accounts([AccountBalance("A", "156", 1000)])
    entry = MessageEntry("2026-06-15T10:00:00.000", "in", "peer", "T1", "0800", "000001", {"11": "000001"})
    try:
        with pytest.raises(JournalError, match="no account B"):
            with journal.batch():
                journal.record(Unit((entry,), postings=(Posting("A", -100),), at="now"))
                journal.record(Unit((entry,), postings=(Posting("B", -100),), at="now"))
        assert journal.balance("A") == 1000 and journal.messages() == []
        journal.record(Unit((entry,), postings=(Posting("A", -100),), at="now"))  # outside a batch: committed at once
        reader = Journal(tmp_path / "journal.sqlite")
        assert reader.balance("A") == 900 and len(reader.messages()) == 1
        reader.close()
    finally:
        journal.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_frames_sent_together_are_answered_in_order(tmp_path, dialect):
    with running_host(tmp_path, dialect) as host:
        with host.terminal() as pos, host.terminal() as other:
            pos.exchange(sign_on(host.dialect, "000001"))
            pos.send_raw(b"".join(pos.framed(purchase(host.dialect, f"{n:06d}", amount=100)) for n in (2, 3, 4)))
            other.send(purchase(host.dialect, "000005", amount=100))
            assert [(a.mti, a[11], a[39]) for a in (pos.receive(), pos.receive(), pos.receive())] == [
                ("0210", "000002", "00"), ("0210", "000003", "00"), ("0210", "000004", "00"),
            ]
            assert other.receive()[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 400


def test_a_terminal_that_stops_sending_still_gets_its_answer(tmp_path):
    with running_host(tmp_path, "cup") as host:
        with host.terminal() as pos:
            pos.exchange(sign_on(host.dialect, "000001"))
            pos.send(purchase(host.dialect, "000002", amount=100))
            pos.sock.shutdown(socket.SHUT_WR)
            assert pos.receive()[39] == "00"
            assert pos.closed_by_host()
