"""The host's side of the full transaction set (docs/transactions.md), over TCP, in every built-in dialect:
voids, refunds, pre-authorization and completion, balance inquiry, offline advices, reversals of each,
and batch close with upload. Requests are built here from the dialect's transaction table, as a
third-party terminal would, so the host is tested against the document and not against our terminal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from host_support import DIALECTS, MID, OPENING, TID, CARDS, purchase, reversal, running_host, sign_on
from possim.wire.batch_totals import BatchTotals, Totals, decode_cup48, encode_cup48, pack_cup_upload, set_iso_totals
from possim.wire.batch_totals import UploadRecord, end_of_upload_48
from possim.wire.dialect import Dialect
from possim.wire.message import Message


@pytest.fixture(params=DIALECTS)
def host(request, tmp_path):
    with running_host(tmp_path, request.param) as running:
        yield running


def txn(dialect: Dialect, kind: str, stan: str, card: str = "approve", amount: int = 1250, rrn: str | None = None,
        auth: str | None = None) -> Message:
    """A request of `kind` with the codes the dialect's table gives it."""
    spec = dialect.transaction(kind)
    message = purchase(dialect, stan, card=card, amount=amount, mti=spec.mti, processing_code=spec.processing_code)
    message[25] = spec.condition
    if spec.type_code:
        dialect.set_role(message, "transaction_type", spec.type_code)
    if rrn is not None:
        message[37] = rrn
    if auth is not None:
        message[38] = auth
    if kind == "balance":
        del message.fields[4]
    return message


def signed_on(host):
    pos = host.terminal()
    assert pos.exchange(sign_on(host.dialect, "000001"))[39] == "00"
    return pos


def test_a_void_gives_back_the_sale_once_and_only_in_the_open_batch(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = pos.exchange(txn(d, "sale", "000002"))
        assert sale[39] == "00"
        assert pos.exchange(txn(d, "sale_void", "000003", amount=999, rrn=sale[37]))[39] == "13"
        assert pos.exchange(txn(d, "sale_void", "000004", rrn="999999999999"))[39] == "25"
        void = pos.exchange(txn(d, "sale_void", "000005", rrn=sale[37]))
        assert void[39] == "00" and void.mti == d.transaction("sale_void").mti[:2] + "10"
        assert host.balance("A-1001") == OPENING["A-1001"]
        assert pos.exchange(txn(d, "sale_void", "000006", rrn=sale[37]))[39] == "12"  # already voided
        assert host.balance("A-1001") == OPENING["A-1001"]
    rows = {t.stan: t for t in host.core.journal.transactions()}
    assert (rows["000002"].status, rows["000002"].kind) == ("voided", "sale")
    assert rows["000005"].original_id == rows["000002"].id
    assert rows["000006"].decline_step == "original_valid"


def test_refunds_never_exceed_what_remains_of_the_original(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = pos.exchange(txn(d, "sale", "000002", amount=10000))
        assert pos.exchange(txn(d, "refund", "000003", amount=6000, rrn=sale[37]))[39] == "00"
        assert pos.exchange(txn(d, "refund", "000004", amount=4001, rrn=sale[37]))[39] == "13"
        assert pos.exchange(txn(d, "refund", "000005", amount=4000, rrn=sale[37]))[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"]
        assert pos.exchange(txn(d, "refund", "000006", amount=1, rrn=sale[37]))[39] == "13"
    assert host.core.journal.transaction_by_rrn(sale[37]).refunded_amount == 10000


def test_a_preauth_holds_funds_a_completion_takes_them_within_the_tolerance(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        auth = pos.exchange(txn(d, "preauth", "000002", amount=10000))
        assert auth[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 10000  # held
        too_much = pos.exchange(txn(d, "completion", "000003", amount=11501, rrn=auth[37], auth=auth[38]))
        assert too_much[39] == "13"
        done = pos.exchange(txn(d, "completion", "000004", amount=11500, rrn=auth[37], auth=auth[38]))
        assert done[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 11500
        again = pos.exchange(txn(d, "completion", "000005", amount=100, rrn=auth[37], auth=auth[38]))
        assert again[39] == "12"  # the hold is completed
        void = pos.exchange(txn(d, "completion_void", "000006", amount=11500, rrn=done[37]))
        assert void[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"]


def test_a_preauth_void_releases_and_an_expired_hold_goes_back_by_itself(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        first = pos.exchange(txn(d, "preauth", "000002", amount=3000))
        assert pos.exchange(txn(d, "preauth_void", "000003", amount=3000, rrn=first[37], auth=first[38]))[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"]
        second = pos.exchange(txn(d, "preauth", "000004", amount=5000))
        assert host.balance("A-1001") == OPENING["A-1001"] - 5000
        host.core.clock.advance(timedelta(days=8))
        assert pos.exchange(sign_on(d, "000005"))[39] == "00"
        late = pos.exchange(txn(d, "completion", "000006", amount=5000, rrn=second[37], auth=second[38]))
        assert late[39] == "12"
        assert host.balance("A-1001") == OPENING["A-1001"]
    assert host.core.journal.hold(host.core.journal.transaction_by_rrn(second[37]).id).state == "expired"


def test_balance_inquiry_answers_the_available_balance_in_field_54(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        pos.exchange(txn(d, "preauth", "000002", amount=2500))
        answer = pos.exchange(txn(d, "balance", "000003"))
        assert answer[39] == "00"
        assert answer[54] == f"0002156C{OPENING['A-1001'] - 2500:012d}"


def test_an_offline_advice_posts_even_without_funds_and_its_repeat_is_answered_the_same(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        advice = txn(d, "offline", "000002", card="insufficient", amount=5000)
        advice[38] = "OFF123"
        first = pos.exchange(advice)
        assert (first.mti, first[39], first[38]) == ("0230", "00", "OFF123")
        advice.mti = "0221"
        repeat = pos.exchange(advice)
        assert (repeat[39], repeat[37]) == ("00", first[37])
    assert host.balance("A-1002") == OPENING["A-1002"] - 5000


def test_reversing_a_void_puts_the_sale_back_and_reversing_a_completion_holds_again(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = pos.exchange(txn(d, "sale", "000002", amount=2000))
        void_request = txn(d, "sale_void", "000003", amount=2000, rrn=sale[37])
        pos.exchange(void_request)
        assert pos.exchange(reversal(d, void_request, "000004"))[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 2000
        assert host.core.journal.transaction_by_rrn(sale[37]).status == "approved"

        auth = pos.exchange(txn(d, "preauth", "000005", amount=3000))
        completion = txn(d, "completion", "000006", amount=3300, rrn=auth[37], auth=auth[38])
        pos.exchange(completion)
        assert host.balance("A-1001") == OPENING["A-1001"] - 2000 - 3300
        assert pos.exchange(reversal(d, completion, "000007"))[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 2000 - 3000  # held again
        assert pos.exchange(txn(d, "completion", "000008", amount=3000, rrn=auth[37], auth=auth[38]))[39] == "00"


def close_request(d: Dialect, stan: str, totals: BatchTotals, batch: str = "000001") -> Message:
    message = Message("0500", {11: stan, 41: TID, 42: MID})
    if d.name == "cup":
        message[60] = "00" + batch + "201"
        message[48] = encode_cup48(totals)
    else:
        set_iso_totals(message, totals, "0615")
        if d.convention("transmission_datetime"):
            message[7] = "0615100000"
    return message


def balanced(answer: Message, dialect: Dialect) -> bool | None:
    if dialect.name == "cup":
        assert answer[39] == "00"
        return {"1": True, "2": False}.get(decode_cup48(answer[48])[1])
    return {"00": True, "95": False}.get(answer[39])


def test_a_balanced_batch_closes_once_and_the_next_batch_opens(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = pos.exchange(txn(d, "sale", "000002", amount=1000))
        pos.exchange(txn(d, "sale", "000003", amount=2000))
        pos.exchange(txn(d, "sale_void", "000004", amount=1000, rrn=sale[37]))
        pos.exchange(txn(d, "refund", "000005", amount=500, rrn=sale[37]))  # refunds of a voided sale: refused
        declined = pos.exchange(txn(d, "sale", "000006", card="insufficient", amount=5000))
        assert declined[39] == "51"
        totals = BatchTotals(domestic=Totals(debit_count=2, debit_amount=3000, credit_count=1, credit_amount=1000))
        answer = pos.exchange(close_request(d, "000007", totals))
        assert balanced(answer, d) is True
        assert host.core.journal.terminal(TID).batch_number == "000002"
        assert pos.exchange(close_request(d, "000007", totals))[39] == answer[39]  # the same 0500 again
        if d.name == "cup":  # 60.2 names batch 000001 again
            assert pos.exchange(close_request(d, "000008", totals))[39] == "80"
        else:  # iso87 names no batch: a new 0500 closes the open one, 000002, which is empty
            assert pos.exchange(close_request(d, "000008", totals))[39] == "95"
        assert pos.exchange(txn(d, "sale_void", "000009", amount=2000,
                                rrn=host.core.journal.transactions()[1].rrn))[39] == "12"  # batch closed
    closed = host.core.journal.closed_batch(TID, "000001")
    assert closed.balanced and closed.close_stan == "000007"


def test_an_out_of_balance_batch_is_uploaded(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = pos.exchange(txn(d, "sale", "000002", amount=1000))
        wrong = BatchTotals(domestic=Totals(debit_count=2, debit_amount=1500))
        assert balanced(pos.exchange(close_request(d, "000003", wrong)), d) is False
        if d.name == "cup":
            records = [UploadRecord("00", "000002", "622848*********0017", 1000),
                       UploadRecord("00", "000099", "622848*********0017", 500)]
            [packed] = pack_cup_upload(records)
            upload = Message("0320", {11: "000004", 41: TID, 42: MID, 48: packed, 60: "00" + "000001" + "201"})
            assert pos.exchange(upload)[39] == "00"
            end = Message("0320", {11: "000005", 41: TID, 42: MID, 48: end_of_upload_48(2), 60: "00" + "000001" + "202"})
            assert pos.exchange(end)[39] == "00"
        else:
            for stan, (original, amount) in enumerate([("000002", 1000), ("000099", 500)], start=4):
                upload = Message("0320", {3: "000000", 4: f"{amount:012d}", 11: original, 37: sale[37], 41: TID, 42: MID})
                upload[7] = "0615100000"
                assert pos.exchange(upload)[39] == "00"
            trailer = Message("0500", {3: "960000", 7: "0615100000", 11: "000006", 41: TID, 42: MID})
            assert pos.exchange(trailer)[39] == "00"
    stored = host.core.journal.uploads(TID, "000001")
    assert [(u.stan, u.amount) for u in stored] == [("000002", 1000), ("000099", 500)]


def test_totals_that_do_not_parse_are_a_format_error(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        message = close_request(d, "000002", BatchTotals())
        if d.name == "cup":
            message[48] = "1" * 30
        else:
            del message.fields[88]
        answer = pos.exchange(message)
        assert answer[39] == "30"
    assert host.core.journal.closed_batch(TID, "000001") is None


def test_cup_splits_totals_into_domestic_and_foreign_cards(tmp_path) -> None:
    with running_host(tmp_path, "cup") as host:
        d = host.dialect
        with signed_on(host) as pos:
            pos.exchange(txn(d, "sale", "000002", amount=1000))
            pos.exchange(txn(d, "sale", "000003", card="over-limit", amount=700))  # a 4000... card: foreign
            totals = BatchTotals(domestic=Totals(debit_count=1, debit_amount=1000),
                                 foreign=Totals(debit_count=1, debit_amount=700))
            assert balanced(pos.exchange(close_request(d, "000004", totals)), d) is True
    assert CARDS["over-limit"]["pan"].startswith("4")


def test_a_preauth_is_named_by_rrn_and_authorization_code_and_cancelled_whole(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        auth = pos.exchange(txn(d, "preauth", "000002", amount=3000))
        wrong = "999999" if auth[38] != "999999" else "111111"
        assert pos.exchange(txn(d, "completion", "000003", amount=3000, rrn=auth[37], auth=wrong))[39] == "25"
        assert pos.exchange(txn(d, "preauth_void", "000004", amount=3000, rrn=auth[37], auth=wrong))[39] == "25"
        assert pos.exchange(txn(d, "preauth_void", "000005", amount=1000, rrn=auth[37], auth=auth[38]))[39] == "13"
        assert host.balance("A-1001") == OPENING["A-1001"] - 3000  # still held
        assert pos.exchange(txn(d, "preauth_void", "000006", amount=3000, rrn=auth[37], auth=auth[38]))[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"]


def test_a_reversal_advice_0420_reverses_like_a_0400_and_is_answered_0430(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        sale = txn(d, "sale", "000002", amount=2200)
        assert pos.exchange(sale)[39] == "00"
        advice = reversal(d, sale, "000003", mti="0420")
        answer = pos.exchange(advice)
        assert (answer.mti, answer[39]) == ("0430", "00")
        advice.mti = "0421"
        assert pos.exchange(advice)[39] == "00"  # a repeat: nothing more to give back
    assert host.balance("A-1001") == OPENING["A-1001"]


def test_nothing_built_on_a_refund_or_a_completion_moves_money_twice(host) -> None:
    """A refunded sale can be neither voided nor reversed; a completed pre-auth cannot be reversed; an expired
    one is reversed without giving its hold back twice; the card and currency must be the original's."""
    d = host.dialect
    with signed_on(host) as pos:
        sale = txn(d, "sale", "000002", amount=10000)
        answer = pos.exchange(sale)
        assert pos.exchange(txn(d, "refund", "000003", amount=6000, rrn=answer[37]))[39] == "00"
        assert pos.exchange(txn(d, "sale_void", "000004", amount=10000, rrn=answer[37]))[39] == "12"
        assert pos.exchange(reversal(d, sale, "000005"))[39] == "00"  # acknowledged, nothing reversed
        assert host.balance("A-1001") == OPENING["A-1001"] - 4000
        assert host.core.journal.transaction_by_rrn(answer[37]).status == "approved"

        hold = txn(d, "preauth", "000006", amount=5000)
        held = pos.exchange(hold)
        assert pos.exchange(txn(d, "completion", "000007", amount=4000, rrn=held[37], auth=held[38]))[39] == "00"
        assert pos.exchange(reversal(d, hold, "000008"))[39] == "00"  # the completion stands: nothing reversed
        assert host.balance("A-1001") == OPENING["A-1001"] - 4000 - 4000

        other = pos.exchange(txn(d, "sale", "000009", amount=700))
        assert pos.exchange(txn(d, "sale_void", "000010", card="approve2", amount=700, rrn=other[37]))[39] == "25"
        in_yen = txn(d, "refund", "000011", amount=100, rrn=other[37])
        in_yen[49] = "392"
        assert pos.exchange(in_yen)[39] == "12"
        assert host.balance("A-1004") == OPENING["A-1004"]


def test_an_expired_preauth_reversed_gives_nothing_back_twice(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        hold = txn(d, "preauth", "000002", amount=5000)
        assert pos.exchange(hold)[39] == "00"
        host.core.clock.advance(timedelta(days=8))
        assert pos.exchange(sign_on(d, "000003"))[39] == "00"
        assert pos.exchange(txn(d, "balance", "000004"))[39] == "00"  # a financial request releases expired holds
        assert host.balance("A-1001") == OPENING["A-1001"]
        late = reversal(d, hold, "000005")
        assert pos.exchange(late)[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"]


def test_a_cup_close_naming_a_batch_that_is_not_open_is_refused(tmp_path) -> None:
    with running_host(tmp_path, "cup") as host:
        d = host.dialect
        with signed_on(host) as pos:
            pos.exchange(txn(d, "sale", "000002", amount=1000))
            assert pos.exchange(close_request(d, "000003", BatchTotals(), batch="000050"))[39] == "80"
        assert host.core.journal.terminal(TID).batch_number == "000001"
        assert host.core.journal.closed_batch(TID, "000050") is None
