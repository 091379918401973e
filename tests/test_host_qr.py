"""The host's side of QR payments over ISO 8583 (docs/qr.md), in every built-in dialect: merchant-presented
orders (create, query, close, expiry, reversal), scanned payment codes (paid, waiting for the password, declined,
cancelled by reversal) and refunds. Requests are built from the dialect's transaction table and the qr_data
codec, as a third-party terminal would; the wallet pays through the host's own order service, as the wallet
network's HTTP entry does (tests/test_http_api.py drives that entry over HTTP)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from host_support import DIALECTS, MID, TID, reversal, running_host, sign_on
from possim.acquirer.journal import Unit
from possim.acquirer.wallets import WalletNetwork
from possim.wire.dialect import Dialect
from possim.wire.message import Message
from possim.wire.payment_code import generate
from possim.wire.qr_data import decode_qr_data, encode_qr_data

WALLETS = WalletNetwork.from_fixtures()


@pytest.fixture(params=DIALECTS)
def host(request, tmp_path):
    with running_host(tmp_path, request.param) as running:
        yield running


def qr(dialect: Dialect, kind: str, stan: str, amount: int | None = None, when=None, **data: str) -> Message:
    spec = dialect.transaction(kind)
    message = Message(spec.mti, {3: spec.processing_code, 11: stan, 12: "100000", 13: "0615", 25: spec.condition,
                                 41: TID, 42: MID, 49: "156"})
    if amount is not None:
        message[4] = f"{amount:012d}"
    if dialect.convention("transmission_datetime"):
        message[7] = "0615100000"
    if spec.type_code:
        dialect.set_role(message, "transaction_type", spec.type_code)
    dialect.set_role(message, "batch_number", "000001")
    if data:
        dialect.set_role(message, "qr_data", encode_qr_data(data))
    return message


def data_of(dialect: Dialect, answer: Message) -> dict[str, str]:
    return decode_qr_data(dialect.get_role(answer, "qr_data") or "")


def code_of(name: str, host) -> str:
    account = WALLETS.account(name)
    assert account is not None
    return generate(account.provider, account.number, account.secret, host.core.clock())


def wallet_pays(host, payload: str, name: str = "alice", password: str | None = None):
    """Pay on the host's own loop, as the HTTP wallet entry does."""
    core = host.core
    account = core.orders.wallets.account(name)

    async def pay():
        change = core.orders.pay(payload=payload, account=account, now=core.clock(), password=password,
                                 merchant=core.registry.merchant)
        core.journal.record(Unit(at=core.clock().isoformat(), **change.unit_parts()))
        return change.order

    return asyncio.run_coroutine_threadsafe(pay(), host.thread._loop).result(5)


def signed_on(host):
    pos = host.terminal()
    assert pos.exchange(sign_on(host.dialect, "000001"))[39] == "00"
    return pos


def test_an_order_is_created_paid_by_the_wallet_and_its_row_carries_channel_and_wallet_ids(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        created = pos.exchange(qr(d, "qr_order", "000002", 1250))
        assert created[39] == "00" and created.mti == "0110"
        order = data_of(d, created)
        assert order["status"] == "created" and order["payload"].startswith("000201010212")
        assert "6304" in order["payload"] and order["order_no"] in order["payload"]
        assert data_of(d, pos.exchange(qr(d, "qr_query", "000003", order_no=order["order_no"])))["status"] == "created"
        paid = wallet_pays(host, order["payload"])
        assert paid.status == "paid" and paid.channel == "wechat"
        state = data_of(d, pos.exchange(qr(d, "qr_query", "000004", order_no=order["order_no"])))
        assert state["status"] == "paid" and state["paid"] == "1250" and state["wallet_txn_id"] == paid.wallet_txn_id
    assert host.balance("wallet:alice") == WALLETS.account("alice").opening_balance - 1250
    row = next(t for t in host.core.journal.transactions() if t.kind == "qr_order")
    assert (row.status, row.posted_amount, row.account_id) == ("approved", 1250, "wallet:alice")
    assert (row.channel, row.wallet_txn_id, row.order_no) == ("wechat", paid.wallet_txn_id, order["order_no"])
    assert row.batch_number == "000001"


def test_a_retransmitted_order_gets_its_first_answer_and_makes_no_second_order(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        first = pos.exchange(qr(d, "qr_order", "000002", 1250))
        again = pos.exchange(qr(d, "qr_order", "000002", 1250))
        assert data_of(d, again)["order_no"] == data_of(d, first)["order_no"]
        assert pos.exchange(qr(d, "qr_order", "000002", 999))[39] == "94"  # the STAN reused for another amount
    assert len(host.core.journal.orders()) == 1


def test_closing_an_unpaid_order_stops_the_wallet_and_closing_a_paid_one_reports_it_paid(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        one = data_of(d, pos.exchange(qr(d, "qr_order", "000002", 500)))
        closed = pos.exchange(qr(d, "qr_close", "000003", order_no=one["order_no"]))
        assert closed[39] == "00" and data_of(d, closed)["status"] == "closed"
        with pytest.raises(Exception, match="closed"):
            wallet_pays(host, one["payload"])
        two = data_of(d, pos.exchange(qr(d, "qr_order", "000004", 700)))
        wallet_pays(host, two["payload"])
        late = pos.exchange(qr(d, "qr_close", "000005", order_no=two["order_no"]))
        assert late[39] == "00" and data_of(d, late)["status"] == "paid"
    rows = {t.order_no: t.status for t in host.core.journal.transactions()}
    assert rows == {one["order_no"]: "closed", two["order_no"]: "approved"}


def test_an_unpaid_order_expires_and_the_wallet_can_no_longer_pay_it(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        order = data_of(d, pos.exchange(qr(d, "qr_order", "000002", 500)))
        host.core.clock.advance(timedelta(seconds=301))
        assert data_of(d, pos.exchange(qr(d, "qr_query", "000003", order_no=order["order_no"])))["status"] == "closed"
        with pytest.raises(Exception, match="closed"):
            wallet_pays(host, order["payload"])
    assert host.balance("wallet:alice") == WALLETS.account("alice").opening_balance


def test_a_reversed_order_is_closed_when_unpaid_and_refunded_in_full_when_paid(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        unpaid = qr(d, "qr_order", "000002", 500)
        order = data_of(d, pos.exchange(unpaid))
        assert pos.exchange(reversal(d, unpaid, "000003"))[39] == "00"
        paid_request = qr(d, "qr_order", "000004", 800)
        paid = data_of(d, pos.exchange(paid_request))
        wallet_pays(host, paid["payload"])
        assert pos.exchange(reversal(d, paid_request, "000005"))[39] == "00"
        assert pos.exchange(reversal(d, paid_request, "000006", mti="0401"))[39] == "00"  # a repeat gives nothing twice
    orders = {o.order_no: o.status for o in host.core.journal.orders()}
    assert orders == {order["order_no"]: "reversed", paid["order_no"]: "reversed"}
    assert host.balance("wallet:alice") == WALLETS.account("alice").opening_balance


def test_a_scanned_code_pays_at_once_or_waits_for_the_password_and_a_reversal_cancels_it(host) -> None:
    d = host.dialect
    alice = WALLETS.account("alice")
    with signed_on(host) as pos:
        small = pos.exchange(qr(d, "qr_sale", "000002", 2000, payment_code=code_of("alice", host)))
        assert small[39] == "00" and data_of(d, small)["channel"] == "wechat"
        big_request = qr(d, "qr_sale", "000003", 40000, payment_code=code_of("alice", host))
        big = pos.exchange(big_request)
        assert big[39] == "09" and data_of(d, big)["status"] == "paying"
        assert host.balance("wallet:alice") == alice.opening_balance - 2000
        assert pos.exchange(reversal(d, big_request, "000004"))[39] == "00"
    orders = {o.amount: o.status for o in host.core.journal.orders()}
    assert orders == {2000: "paid", 40000: "reversed"}
    assert host.balance("wallet:alice") == alice.opening_balance - 2000


def test_a_payment_waiting_for_the_password_is_paid_once_confirmed(host) -> None:
    d = host.dialect
    core = host.core
    with signed_on(host) as pos:
        answer = pos.exchange(qr(d, "qr_sale", "000002", 40000, payment_code=code_of("carol", host)))
        order_no = data_of(d, answer)["order_no"]
        order = core.journal.order(order_no)
        carol = core.orders.wallets.account("carol")

        async def confirm(password: str):
            change = core.orders.confirm(wallet_txn_id=order.wallet_txn_id, account=carol, password=password,
                                         now=core.clock())
            core.journal.record(Unit(at=core.clock().isoformat(), **change.unit_parts()))

        with pytest.raises(Exception, match="password"):
            asyncio.run_coroutine_threadsafe(confirm("000000"), host.thread._loop).result(5)
        asyncio.run_coroutine_threadsafe(confirm("111111"), host.thread._loop).result(5)
        state = data_of(d, pos.exchange(qr(d, "qr_query", "000003", order_no=order_no)))
        assert state["status"] == "paid" and state["channel"] == "unionpay"
    assert host.balance("wallet:carol") == carol.opening_balance - 40000


@pytest.mark.parametrize("who, amount, code", [("bob", 2000, "51"), ("dave", 100, "62")])
def test_the_wallet_declines_and_nothing_moves(host, who, amount, code) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        answer = pos.exchange(qr(d, "qr_sale", "000002", amount, payment_code=code_of(who, host)))
        assert answer[39] == code
    row = host.core.journal.transactions()[-1]
    assert (row.status, row.posted_amount, row.decline_step) == ("declined", 0, "wallet")
    assert host.balance(f"wallet:{who}") == WALLETS.account(who).opening_balance


def test_an_expired_or_unknown_code_is_declined_14(host) -> None:
    d = host.dialect
    alice = WALLETS.account("alice")
    stale = generate("wechat", alice.number, alice.secret, host.core.clock() - timedelta(minutes=5))
    with signed_on(host) as pos:
        assert pos.exchange(qr(d, "qr_sale", "000002", 100, payment_code=stale))[39] == "14"
        assert pos.exchange(qr(d, "qr_sale", "000003", 100, payment_code="139999990123456789"))[39] == "14"
        assert pos.exchange(qr(d, "qr_sale", "000004", 100, payment_code="990000000000000000"))[39] == "14"


def test_refunds_in_parts_never_exceed_what_was_paid(host) -> None:
    d = host.dialect
    with signed_on(host) as pos:
        paid = data_of(d, pos.exchange(qr(d, "qr_sale", "000002", 3000, payment_code=code_of("alice", host))))
        first = pos.exchange(qr(d, "qr_refund", "000003", 1000, order_no=paid["order_no"]))
        assert first[39] == "00" and data_of(d, first)["refunded"] == "1000"
        assert pos.exchange(qr(d, "qr_refund", "000004", 2500, order_no=paid["order_no"]))[39] == "13"
        last = pos.exchange(qr(d, "qr_refund", "000005", 2000, order_no=paid["order_no"]))
        assert data_of(d, last)["status"] == "refunded"
        assert pos.exchange(qr(d, "qr_refund", "000006", 1, order_no=paid["order_no"]))[39] == "13"
    assert host.balance("wallet:alice") == WALLETS.account("alice").opening_balance
    refunds = [t for t in host.core.journal.transactions() if t.kind == "qr_refund" and t.status == "approved"]
    assert [(t.amount, t.posted_amount, t.channel) for t in refunds] == [(1000, -1000, "wechat"), (2000, -2000, "wechat")]


def test_bad_qr_data_is_a_format_error_naming_the_field_and_an_unknown_order_25(host) -> None:
    d = host.dialect
    field = d.roles["qr_data"]
    with signed_on(host) as pos:
        broken = qr(d, "qr_query", "000002")
        d.set_role(broken, "qr_data", "02099123")
        assert pos.exchange(broken)[39] == "30"
        assert pos.exchange(qr(d, "qr_sale", "000003", 100))[39] == "30"
        assert pos.exchange(qr(d, "qr_query", "000004", order_no="2606150000009999"))[39] == "25"
    notes = [m.note for m in host.core.journal.messages() if m.direction == "in" and m.note]
    assert any(f"field {field}" in n for n in notes)


def test_the_journal_never_holds_a_whole_payment_code(host) -> None:
    d = host.dialect
    code = code_of("alice", host)
    with signed_on(host) as pos:
        pos.exchange(qr(d, "qr_sale", "000002", 100, payment_code=code))
    content = b"".join(p.read_bytes() for p in host.db_path.parent.glob("journal.sqlite*"))
    assert code.encode() not in content
    logged = [m.fields.get(d.roles["qr_data"], "") for m in host.core.journal.messages()]
    assert any(code[:6] in f and code[-4:] in f for f in logged)
