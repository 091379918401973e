"""Batch close from the terminal's side (docs/transactions.md "Batch close"), over real TCP against a scripted peer.

Totals are recomputed here from the amounts the test itself transacted, not
read back from the terminal.
"""

import pytest

from possim.terminal.cards import resolve_card
from possim.terminal.state import TerminalState
from possim.terminal.terminal import TerminalError
from possim.wire.batch_totals import Totals, decode_cup48, read_end_of_upload_48, read_iso_totals, unpack_cup_upload
from test_terminal_transactions import Peer, finish, run, terminal_for

DOMESTIC = "approve"  # 6228..., BIN 62
FOREIGN = "4000001000000018"  # a Visa PAN: foreign in cup's totals


async def mixed_batch(t):
    """sale 1000 (voided), sale 2500, foreign sale 700, refund 300, offline 400: returns the STANs."""
    card = resolve_card(DOMESTIC)
    first = await t.purchase(1000, card)
    second = await t.purchase(2500, card)
    foreign = await t.purchase(700, resolve_card(FOREIGN))
    void = await t.void(first.stan)
    refund = await t.refund(300, card, second.rrn)
    offline = await t.offline(400, card)
    return [first.stan, second.stan, foreign.stan, void.stan, refund.stan, offline.stan]


def test_cup_close_sends_split_totals_uploads_everything_and_opens_the_next_batch(tmp_path):
    async def main():
        async with Peer("cup") as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer)
            stans = await mixed_batch(t)
            result = await t.batch_close()
            status = (t.state.batch_number, t.state.open_batch())
            await finish(t)
            return peer, stans, result, status

    peer, stans, result, (batch_number, open_batch) = run(main())
    assert result.closed and result.balanced and result.next_batch_number == 2
    assert batch_number == 2 and open_batch == []
    mtis = [m.mti for m in peer.received]
    assert mtis[-4:] == ["0220", "0500", "0320", "0320"]  # the offline advice goes first
    settle, upload, end = peer.received[-3:]
    assert settle[60] == "00" + "000001" + "201"
    totals, result_digit = decode_cup48(settle[48])
    assert result_digit == "0"
    # Debits: both domestic sales (the voided one still counts) and the offline sale; credits: void and refund.
    assert totals.domestic == Totals(3, 1000 + 2500 + 400, 2, 1000 + 300)
    assert totals.foreign == Totals(1, 700, 0, 0)
    assert upload[60][8:11] == "201" and end[60][8:11] == "202"
    records = unpack_cup_upload(upload[48])
    assert sorted(r.stan for r in records) == sorted(stans)
    by_stan = {r.stan: r for r in records}
    assert by_stan[stans[2]].card_org == "01" and by_stan[stans[0]].card_org == "00"
    assert by_stan[stans[4]].amount == 300 and by_stan[stans[0]].masked_pan == "622848" + "0" * 9 + "0017"
    assert read_end_of_upload_48(end[48]) == 6
    assert (result.uploaded, result.upload_messages, result.upload_total) == (6, 1, 6)


def test_cup_uploads_at_most_8_records_per_0320(tmp_path):
    async def main():
        async with Peer("cup", verdict="unbalanced") as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer)
            for amount in range(101, 111):
                await t.purchase(amount, resolve_card(DOMESTIC))
            await t.preauth(5000, resolve_card(DOMESTIC))  # counted nowhere, not uploaded
            result = await t.batch_close()
            await finish(t)
            return peer, result

    peer, result = run(main())
    assert result.closed and result.balanced is False  # cup: out of balance is 00 with result 2, still closed
    uploads = [m for m in peer.received if m.mti == "0320"]
    assert [len(unpack_cup_upload(m[48])) for m in uploads[:-1]] == [8, 2]
    assert sum(r.amount for m in uploads[:-1] for r in unpack_cup_upload(m[48])) == sum(range(101, 111))
    assert read_end_of_upload_48(uploads[-1][48]) == 10


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso87binary"])
def test_iso87_balanced_close_uploads_nothing(tmp_path, dialect):
    async def main():
        async with Peer(dialect) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect)
            await mixed_batch(t)
            result = await t.batch_close()
            await finish(t)
            return peer, result

    peer, result = run(main())
    assert result.closed and result.balanced and result.next_batch_number == 2
    settle = peer.received[-1]
    assert settle.mti == "0500" and 3 not in settle and settle[15] == "0314"
    combined = read_iso_totals(settle).combined
    assert combined == Totals(4, 1000 + 2500 + 700 + 400, 2, 1300)
    assert settle[97] == "D" + f"{4600 - 1300:016d}"
    assert "0320" not in [m.mti for m in peer.received]


def test_iso87_out_of_balance_uploads_each_transaction_then_sends_the_trailer(tmp_path):
    async def main():
        async with Peer("iso87ascii", verdict="unbalanced") as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, "iso87ascii")
            stans = await mixed_batch(t)
            result = await t.batch_close()
            await finish(t)
            return peer, stans, result

    peer, stans, result = run(main())
    originals = {m[11]: m for m in peer.received if m.mti[:2] == "02"}  # the offline advice went at the close
    assert result.closed and result.balanced is False and result.response_code == "95"
    tail = [m.mti for m in peer.received][-8:]
    assert tail == ["0500"] + ["0320"] * 6 + ["0500"]
    uploads = peer.received[-7:-1]
    assert [m[11] for m in uploads] == stans
    for upload in uploads:
        original = originals[upload[11]]
        assert (upload[3], upload[4]) == (original[3], original[4])
        assert upload[37] and 2 not in upload and 35 not in upload
    assert peer.received[-1][3] == "960000"


@pytest.mark.parametrize("dialect, code", [("cup", "80"), ("iso87ascii", "80")])
def test_batch_already_closed_moves_the_terminal_on(tmp_path, dialect, code):
    async def main():
        async with Peer(dialect, ["ok", code]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, dialect)
            await t.purchase(100, resolve_card(DOMESTIC))
            result = await t.batch_close()
            await finish(t)
            return peer, result

    peer, result = run(main())
    assert result.closed and result.already_closed and result.next_batch_number == 2
    assert [m.mti for m in peer.received] == ["0200", "0500"]


def test_totals_the_host_cannot_parse_leave_the_batch_open(tmp_path):
    async def main():
        async with Peer("cup", ["ok", "30"]) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer)
            await t.purchase(100, resolve_card(DOMESTIC))
            result = await t.batch_close()
            assert not result.closed and result.response_code == "30"
            assert t.state.batch_number == 1 and len(t.state.open_batch()) == 1
            assert t.state.close_progress().phase is None
            again = await t.purchase(200, resolve_card(DOMESTIC))  # the batch is still open for business
            assert again.approved
            await finish(t)

    run(main())


def test_close_waits_for_an_owed_reversal_and_unanswered_advices(tmp_path):
    async def main():
        async with Peer("cup", ["silent"] * 5) as peer:
            t = terminal_for(tmp_path / "t.sqlite", peer, timeout=0.3, retries=1)
            await t.purchase(100, resolve_card(DOMESTIC))  # sale, 0400, 0401: all unanswered
            blocked = await t.batch_close()  # 0401 unanswered again
            assert not blocked.closed and "still owed" in blocked.message
            await t.offline(100, resolve_card(DOMESTIC))
            peer.plan = ["ok", "silent", "silent"]  # reversal taken; advice 0220, 0221 unanswered
            waiting = await t.batch_close()
            assert not waiting.closed and "advice" in waiting.message and waiting.prior_reversal.acknowledged
            assert "0500" not in [m.mti for m in peer.received]
            await finish(t)

    run(main())


def test_interrupted_upload_resumes_in_a_new_process_without_uploading_a_record_twice(tmp_path):
    path = tmp_path / "t.sqlite"

    async def first_process():
        # 0500 answered, first 0320 (8 records) answered, then the host goes silent.
        async with Peer("cup") as peer:
            t = terminal_for(path, peer, timeout=0.3)
            stans = [(await t.purchase(100 + i, resolve_card(DOMESTIC))).stan for i in range(20)]
            peer.plan = ["ok", "ok", "silent"]
            result = await t.batch_close()
            assert not result.closed and result.timed_out and "resumes" in result.message
            assert (result.uploaded, result.upload_messages) == (16, 2)
            with pytest.raises(TerminalError, match="being closed"):
                await t.purchase(100, resolve_card(DOMESTIC))
            await finish(t)
            return stans, [m for m in peer.received if m.mti == "0320"]

    async def second_process():
        async with Peer("cup") as peer:
            t = terminal_for(path, peer)
            assert t.state.close_progress().phase == "upload"
            result = await t.batch_close()
            await finish(t)
            return result, peer.received

    stans, before = run(first_process())
    result, after = run(second_process())
    assert result.closed and result.next_batch_number == 2 and result.balanced
    assert [m.mti for m in after] == ["0320", "0320"]  # no new 0500: the totals were answered already
    uploaded = [r.stan for m in before + after[:1] for r in unpack_cup_upload(m[48])]
    assert sorted(uploaded) == sorted(stans) and len(uploaded) == len(set(uploaded)) == 20
    assert read_end_of_upload_48(after[1][48]) == 20
    state = TerminalState("10000001", path)
    assert state.batch_number == 2 and state.close_progress().phase is None
    state.close()


def test_iso87_resume_after_a_silent_trailer_sends_only_the_trailer(tmp_path):
    path = tmp_path / "t.sqlite"

    async def first_process():
        async with Peer("iso87ascii", verdict="unbalanced") as peer:
            t = terminal_for(path, peer, "iso87ascii", timeout=0.3)
            await t.purchase(100, resolve_card(DOMESTIC))
            await t.purchase(200, resolve_card(DOMESTIC))
            peer.plan = ["ok", "ok", "ok", "silent"]
            result = await t.batch_close()
            assert not result.closed
            await finish(t)

    async def second_process():
        async with Peer("iso87ascii") as peer:
            t = terminal_for(path, peer, "iso87ascii")
            result = await t.batch_close()
            await finish(t)
            return result, peer.received

    run(first_process())
    result, received = run(second_process())
    assert result.closed and result.balanced is False
    assert [(m.mti, m.get(3)) for m in received] == [("0500", "960000")]
