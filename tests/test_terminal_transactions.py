"""The POS transaction set of docs/transactions.md from the terminal's side, over real TCP against a scripted peer.

Expected codes come from the docs' kinds table, typed here, not from the
dialect files the code reads: a dialect file that drifted from the contract fails.
"""

import asyncio
import hashlib
import random
import sqlite3
from dataclasses import replace
from datetime import date, timedelta

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal, TerminalError
from possim.wire import tlv
from possim.wire.batch_totals import decode_cup48, encode_cup48
from possim.wire.clock import SteppingClock
from possim.wire.message import Message, response_mti
from test_terminal_flows import ECHOED, START, IsoPeer

DIALECTS = ["cup", "iso87ascii", "iso87binary"]
TMK = "7AD5D57F456ECEC2A2D910736110E579"  # terminal 10000001 in fixtures/terminals.yaml
# docs/transactions.md, "Transaction kinds": kind -> (MTI, cup 3, cup 25, cup 60.1, iso87 3)
KINDS = {
    "sale": ("0200", "000000", "00", "22", "000000"),
    "sale_void": ("0200", "200000", "00", "23", "020000"),
    "refund": ("0220", "200000", "00", "25", "200000"),
    "preauth": ("0100", "030000", "06", "10", "030000"),
    "preauth_void": ("0100", "200000", "06", "11", "020000"),
    "completion": ("0200", "000000", "06", "20", "000000"),
    "completion_void": ("0200", "200000", "06", "21", "020000"),
    "balance": ("0200", "310000", "00", "01", "310000"),
    "offline": ("0220", "000000", "00", "30", "000000"),
}
BALANCE = "0002156C000000123456"  # field 54: account 00, amount type 02, CNY, credit, 1234.56


class Peer(IsoPeer):
    """IsoPeer that also answers 0100/0220 with an RRN, balance inquiries with field 54,
    and batch close: a 0500 by `verdict` ("balanced", "unbalanced") and 0320s with 00."""

    def __init__(self, dialect_name, plan=(), on_request=None, verdict="balanced"):
        super().__init__(dialect_name, plan, on_request)
        self.verdict = verdict

    def _answer(self, request):
        action = self.plan[0] if self.plan else "ok"
        if action in ("silent", "garbage") or request.mti[:2] not in ("01", "02", "05", "03"):
            return super()._answer(request)
        self.plan = self.plan[1:]
        answer = Message(response_mti(request.mti), {n: request[n] for n in ECHOED if n in request})
        code = "00" if action == "ok" else action
        answer[39] = code
        if request.mti[:2] in ("01", "02"):
            self.rrn += 1
            answer[37] = f"{self.rrn:012d}"
            if code == "00":
                answer[38] = f"A{self.rrn:05d}"
            if request.get(3) == "310000" and code == "00":
                answer[54] = BALANCE
        if request.mti == "0500" and code == "00" and 3 not in request:
            if 48 in request:
                totals, _ = decode_cup48(request[48])
                answer[48] = encode_cup48(totals, "1" if self.verdict == "balanced" else "2")
            elif self.verdict != "balanced":
                answer[39] = "95"
        return self.codec.encode(answer)

    def of(self, mti):
        return [m for m in self.received if m.mti == mti]


def terminal_for(path, peer, dialect="cup", timeout=5.0, retries=1, rng=None, tmk=TMK, pin_pad=True):
    profile = load_profile(dialect=dialect, host=f"127.0.0.1:{peer.port}", timeout=timeout, reversal_retries=retries)
    profile = replace(profile, tmk=tmk, pin_pad=pin_pad)
    state = TerminalState(profile.tid, path)
    link = TcpLink(*profile.address, profile.framing)
    return Terminal(profile, link, state, SteppingClock(START, timedelta(seconds=1)), rng=rng)


async def finish(terminal):
    await terminal.link.close()
    terminal.state.close()


def run(coro):
    return asyncio.run(coro)


def check_kind(dialect, message, kind):
    mti, cup3, cup25, cup60_1, iso3 = KINDS[kind]
    assert message.mti[:3] == mti[:3]
    assert message[25] == cup25
    if dialect == "cup":
        assert message[3] == cup3
        assert message[60][:2] == cup60_1
        assert message[60][2:8] == "000001"  # 60.2: the open batch
    else:
        assert message[3] == iso3
        assert 60 not in message and 7 in message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_kind_sends_the_contracts_codes_and_references(tmp_path, dialect):
    card = resolve_card("approve")

    async def main():
        async with Peer(dialect) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect)
            sale = await t.purchase(1000, card)
            assert sale.operation == "sale" and sale.approved
            void = await t.void()
            refund = await t.refund(300, card, sale.rrn, original_date=date(2025, 3, 10))
            hold = await t.preauth(5000, card)
            released = await t.preauth_void(hold.rrn, hold.auth_code, 5000, card)
            hold2 = await t.preauth(4000, card)
            taken = await t.completion(4200, card, hold2.rrn, hold2.auth_code)
            cancelled = await t.void(taken.stan)
            balance = await t.balance(card)
            offline = await t.offline(700, card, entry="swipe")
            run_ = await t.send_advices()
            results = [sale, void, refund, hold, released, hold2, taken, cancelled, balance]
            assert all(r.approved for r in results), [r.message for r in results if not r.approved]
            assert [r.operation for r in results] == [
                "sale", "sale_void", "refund", "preauth", "preauth_void", "preauth", "completion", "completion_void", "balance"
            ]
            assert offline.approved and not offline.sent and offline.queued
            assert run_.remaining == 0 and run_.advices[0].response_code == "00"
            batch = {e.stan: e for e in t.state.open_batch()}
            await finish(t)
            return peer.received, batch, balance

    received, batch, balance = run(main())
    names = ["sale", "sale_void", "refund", "preauth", "preauth_void", "preauth", "completion", "completion_void",
             "balance", "offline"]
    assert len(received) == len(names)
    for message, kind in zip(received, names):
        check_kind(dialect, message, kind)
    sale, void, refund, hold, released, hold2, taken, cancelled, inquiry, offline = received
    assert void[4] == sale[4] == "000000001000" and void[37] == "000000000001"
    assert 35 not in void and 2 not in void and 38 not in void  # a void names its original by RRN
    assert (refund[4], refund[37], refund[35][:19]) == ("000000000300", "000000000001", "6228480010000000017")
    assert (released[37], released[38]) == ("000000000004", "A00004")
    assert (taken[4], taken[37], taken[38]) == ("000000004200", "000000000006", "A00006")
    assert cancelled[4] == "000000004200" and cancelled[37] == "000000000007"
    assert 4 not in inquiry and balance.balance == 123456
    assert offline.mti == "0220" and offline[38] == "Y1" + offline[11][-4:] and offline[35].startswith("622848")
    if dialect == "cup":
        # 61: original batch n6, STAN n6, date MMDD
        assert void[61] == "000001" + sale[11] + "0314"
        assert refund[61] == "000001" + sale[11] + "0310"  # original_date given wins
        assert released[61] == "000001" + hold[11] + "0314"
        assert taken[61] == "000001" + hold2[11] + "0314"
        assert cancelled[61] == "000001" + taken[11] + "0314"
    else:
        assert not any(61 in m for m in received)
    assert batch[sale[11]].voided and batch[taken[11]].voided
    assert batch[void[11]].kind == "sale_void" and batch[void[11]].original_stan == sale[11]
    assert batch[refund[11]].kind == "refund" and batch[offline[11]].rrn == "000000000010"
    assert inquiry[11] not in batch


@pytest.mark.parametrize("dialect", DIALECTS)
def test_manual_entry_sends_pan_and_expiry_for_any_kind(tmp_path, dialect):
    async def main():
        async with Peer(dialect) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect)
            await t.preauth(100, resolve_card("approve"), entry="manual")
            await t.purchase(100, resolve_card("approve"), manual=True)
            await finish(t)
            return peer.received

    for message in run(main()):
        assert (message[2], message[14], message[22][:2]) == ("6228480010000000017", "3012", "01")
        assert 35 not in message and 55 not in message


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("entry, mode", [("chip", "05"), ("contactless", "07")])
def test_chip_read_sends_track_2_equivalent_sequence_number_and_emv_data(tmp_path, dialect, entry, mode):
    card = resolve_card("approve")

    async def main():
        async with Peer(dialect) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect, rng=random.Random(7))
            await t.purchase(1250, card, entry=entry)
            await t.purchase(99, resolve_card("4000001000000018"), entry=entry)
            await finish(t)
            return peer.received

    first, second = run(main())
    assert first[22] == mode + ("2" if dialect == "cup" else "1")  # cup: no PIN sent; iso87: PIN pad present
    assert first[23] == "001" and first[35] == card.track2 and 2 not in first
    tags = dict(tlv.parse(bytes.fromhex(first[55])))
    expected_un = random.Random(7).getrandbits(32).to_bytes(4, "big")
    assert tags["9F37"] == expected_un
    assert tags["9F36"] == b"\x00\x01" and dict(tlv.parse(bytes.fromhex(second[55])))["9F36"] == b"\x00\x02"
    assert tags["9F02"] == bytes.fromhex("000000001250") and tags["9F03"] == bytes(6)
    assert tags["5F2A"] == bytes.fromhex("0156") and tags["9F1A"] == bytes.fromhex("0156")
    assert tags["9A"] == bytes.fromhex("250314") and tags["9C"] == b"\x00"
    assert tags["9F27"] == b"\x80" and tags["5F34"] == b"\x01" and len(tags["9F10"]) == 7
    assert len(tags["95"]) == 5 and len(tags["82"]) == 2 and len(tags["9F33"]) == 3 and len(tags["9F34"]) == 3
    assert tags["84"] == tags["4F"] == bytes.fromhex("A000000333010101")  # UnionPay for BIN 62
    visa = dict(tlv.parse(bytes.fromhex(second[55])))
    assert visa["84"] == bytes.fromhex("A0000000031010")
    # The lab cryptogram (terminal/emv.py), recomputed from its definition: SHA-256 over the PAN and
    # amount, other amount, country, TVR, currency, date, type, UN, AIP, ATC; first 8 bytes.
    data = (card.pan.encode() + tags["9F02"] + tags["9F03"] + tags["9F1A"] + tags["95"] + tags["5F2A"] + tags["9A"]
            + tags["9C"] + tags["9F37"] + tags["82"] + tags["9F36"])
    assert tags["9F26"] == hashlib.sha256(data).digest()[:8]


def test_void_refuses_what_it_cannot_void(tmp_path):
    async def main():
        async with Peer("cup") as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer)
            with pytest.raises(TerminalError, match="nothing to void"):
                await t.void()
            first = await t.purchase(1000, resolve_card("approve"))
            await t.purchase(2000, resolve_card("approve"))
            with pytest.raises(TerminalError, match="not the card"):
                await t.void(first.stan, card=resolve_card("approve2"))
            voided = await t.void(first.stan, card=resolve_card("approve"))
            assert voided.approved and voided.amount == 1000
            assert peer.received[-1][35].startswith("6228480010000000017")  # card presented again: sent
            with pytest.raises(TerminalError, match=f"STAN {first.stan}"):
                await t.void(first.stan)
            await finish(t)

    run(main())


def test_a_void_the_host_declines_leaves_the_original_unvoided(tmp_path):
    async def main():
        async with Peer("cup", ["ok", "12"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer)
            await t.purchase(1000, resolve_card("approve"))
            result = await t.void()
            assert result.response_code == "12" and not result.approved
            assert [(e.kind, e.voided) for e in t.state.open_batch()] == [("sale", False)]
            await finish(t)

    run(main())


def test_unanswered_void_is_reversed_and_the_original_stands(tmp_path):
    async def main():
        async with Peer("cup", ["ok", "silent"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, timeout=0.3)
            await t.purchase(1000, resolve_card("approve"))
            result = await t.void()
            assert result.timed_out and result.reversal.acknowledged
            reversal = peer.received[-1]
            assert reversal.mti == "0400" and reversal[3] == "200000" and reversal[60][:2] == "23"
            assert [(e.kind, e.voided) for e in t.state.open_batch()] == [("sale", False)]
            await finish(t)

    run(main())


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_unanswered_refund_is_queued_not_reversed_and_repeats_as_0221(tmp_path, dialect):
    path = tmp_path / "t.sqlite"
    card = resolve_card("approve")

    async def first_process():
        async with Peer(dialect, ["ok", "silent"]) as peer:
            t = terminal_for(path, peer, dialect, timeout=0.3)
            sale = await t.purchase(1000, card)
            refund = await t.refund(400, card, sale.rrn)
            assert refund.queued and refund.timed_out and not refund.approved and refund.reversal is None
            assert [m.mti for m in peer.received] == ["0200", "0220"]  # no 0400
            assert [e.kind for e in t.state.open_batch()] == ["sale"]  # joins only when approved
            await finish(t)
            return peer.received[1]

    async def second_process():
        async with Peer(dialect) as peer:
            t = terminal_for(path, peer, dialect)
            sale = await t.purchase(50, card)
            assert [m.mti for m in peer.received] == ["0221", "0200"]
            assert sale.prior_advices[0].answered and sale.prior_advices[0].mti == "0221"
            kinds = [e.kind for e in t.state.open_batch()]
            await finish(t)
            return peer.received[0], kinds

    original = run(first_process())
    repeat, kinds = run(second_process())
    assert repeat[11] == original[11] and repeat[4] == original[4] and repeat[35] == original[35]
    assert repeat.get(7) == original.get(7)  # same transmission time: the host sees a retransmission
    assert kinds == ["sale", "refund", "sale"]


def test_offline_advice_repeats_until_any_answer_and_keeps_the_hosts_code(tmp_path):
    async def main():
        async with Peer("cup", ["silent", "silent", "51"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, timeout=0.3, retries=1)
            result = await t.offline(880, resolve_card("approve"))
            assert peer.received == [] and result.response_code == "Y1" and result.auth_code.startswith("Y1")
            first = await t.send_advices()
            assert first.remaining == 1 and not first.advices[0].answered and first.advices[0].attempts == 2
            second = await t.send_advices()
            assert second.remaining == 0 and second.advices[0].response_code == "51"
            assert [m.mti for m in peer.received] == ["0220", "0221", "0221"]
            assert len({m[11] for m in peer.received}) == 1
            (done,) = t.state.answered_advices()
            assert done.response_code == "51" and done.sealed_card is None
            assert [e.kind for e in t.state.open_batch()] == ["offline"]  # the terminal approved it: it stays
            await finish(t)
            return peer.received[0]

    advice = run(main())
    tags = dict(tlv.parse(bytes.fromhex(advice[55])))
    assert tags["9F27"] == b"\x40" and advice[22][:2] == "05" and advice[23] == "001"  # offline chip: a TC


def test_advices_go_after_the_owed_reversal_and_before_the_request(tmp_path):
    async def main():
        async with Peer("cup", ["silent", "silent", "silent"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, timeout=0.3, retries=1)
            lost = await t.purchase(1000, resolve_card("approve"))  # sale, 0400 and 0401 all unanswered
            assert not lost.reversal.acknowledged
            await t.offline(100, resolve_card("approve"))
            result = await t.purchase(2000, resolve_card("approve"))
            assert result.approved and result.prior_reversal.acknowledged and result.prior_advices[0].answered
            await finish(t)
            return [m.mti for m in peer.received]

    assert run(main()) == ["0200", "0400", "0401", "0401", "0220", "0200"]


def test_advice_kinds_need_a_tmk(tmp_path):
    async def main():
        async with Peer("cup") as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, tmk=None)
            with pytest.raises(TerminalError, match="no TMK"):
                await t.offline(100, resolve_card("approve"))
            with pytest.raises(TerminalError, match="no TMK"):
                await t.refund(100, resolve_card("approve"), "000000000001")
            assert peer.received == [] and t.state.queued_advices() == []
            await finish(t)

    run(main())


def test_queued_card_data_is_sealed_under_the_tmk_never_clear_in_the_state_file(tmp_path):
    card = resolve_card("approve")
    path = tmp_path / "t.sqlite"

    async def main():
        async with Peer("iso87ascii", ["ok", "silent"]) as peer:
            t = terminal_for(path, peer, "iso87ascii", timeout=0.3)
            sale = await t.purchase(1000, card, entry="chip")
            await t.refund(200, card, sale.rrn, entry="manual")  # unanswered: queued with PAN and expiry
            await t.offline(300, card)  # chip: track 2 equivalent and field 55
            assert len(t.state.queued_advices()) == 2
            await t.link.close()
            return t.state

    state = run(main())
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("t.sqlite*"))
    state.close()
    raw += b"".join(f.read_bytes() for f in tmp_path.glob("t.sqlite*"))
    assert b"622848*********0017" in raw
    for secret in (card.pan, card.track2, card.pan[6:], card.track2.replace("D", "=")):
        assert secret.encode() not in raw
    # The sealed blob is IV + TDES-CBC under the TMK (checked with `cryptography` directly).
    db = sqlite3.connect(path)
    blobs = [bytes.fromhex(row[0]) for row in db.execute("SELECT sealed_card FROM advice ORDER BY id")]
    db.close()
    key = bytes.fromhex(TMK)
    clear = []
    for blob in blobs:
        decryptor = Cipher(TripleDES(key + key[:8]), modes.CBC(blob[:8])).decryptor()
        clear.append(decryptor.update(blob[8:]) + decryptor.finalize())
    assert card.pan.encode() in clear[0] and b'"14": "3012"' in clear[0]
    assert card.track2.encode() in clear[1] and b'"55"' in clear[1]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_balance_inquiry_is_not_reversed_and_joins_no_batch(tmp_path, dialect):
    async def main():
        async with Peer(dialect, ["silent"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect, timeout=0.3)
            lost = await t.balance(resolve_card("approve"))
            assert lost.timed_out and lost.reversal is None and lost.balance is None
            found = await t.balance(resolve_card("approve"))
            assert found.balance == 123456 and found.operation == "balance"
            assert [m.mti for m in peer.received] == ["0200", "0200"]
            assert t.state.open_batch() == [] and t.state.pending_reversal() is None
            await finish(t)

    run(main())


def test_old_state_file_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE terminal (id INTEGER PRIMARY KEY CHECK (id = 1), tid TEXT NOT NULL, stan INTEGER NOT NULL,
            batch_number INTEGER NOT NULL, signed_on_date TEXT);
        CREATE TABLE batch (batch_number INTEGER NOT NULL, stan TEXT NOT NULL, rrn TEXT, auth_code TEXT,
            amount INTEGER NOT NULL, currency TEXT NOT NULL, masked_pan TEXT NOT NULL, time TEXT NOT NULL,
            original TEXT NOT NULL, PRIMARY KEY (batch_number, stan));
        INSERT INTO terminal VALUES (1, '10000001', 4, 2, NULL);
        INSERT INTO batch VALUES (2, '000004', '000000000009', 'A1', 700, '156', '622848*********0017',
            '2025-03-14T09:00:00', '{"mti": "0200", "fields": {"3": "000000", "4": "000000000700", "11": "000004"}}');
    """)
    db.commit()
    db.close()
    state = TerminalState("10000001", path)
    (entry,) = state.open_batch()
    assert (entry.kind, entry.voided, entry.uploaded, entry.original_stan) == ("sale", False, False, None)
    assert state.next_atc() == 1 and state.close_progress().phase is None and state.queued_advices() == []
    state.close()
