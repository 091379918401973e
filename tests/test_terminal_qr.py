"""QR payments from the terminal's side (terminal.Terminal qr_*, terminal/qr_flows.py) against the real host over
loopback TCP, in cup and iso87ascii: merchant-presented orders seen through to paid or closed, scanned wallet codes
(paid, waiting for the password, declined), refunds, and the batch balancing with the host's journal.

The wallet pays through the host's HTTP wallet entry (acquirer/http_api.py), signed with the account's secret as
a wallet app would; payment codes come from wire/payment_code with the fixture accounts' secrets. Flows that wait
take a fake clock and sleep, so no test waits out a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.journal import Journal
from possim.acquirer.server import HostThread
from possim.acquirer.wallets import WalletNetwork
from possim.terminal import qr_flows
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.messages import build_request, qr_answer_problem
from possim.terminal.profile import load_profile
from possim.terminal.results import TerminalError
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.api_signature import new_nonce, sign
from possim.wire.clock import SteppingClock
from possim.wire.dialect import load_dialect
from possim.wire.emv_cpm import encode_cpm
from possim.wire.message import Message
from possim.wire.payment_code import generate
from possim.wire.qr_data import decode_qr_data, encode_qr_data

START = datetime(2026, 6, 15, 10, 0, 0)
DIALECTS = ["cup", "iso87ascii"]
TID = "10000001"
WALLETS = WalletNetwork.from_fixtures()
ALICE = WALLETS.account("alice").opening_balance  # 5,000.00: pays up to 300.00 without her password
BOB = WALLETS.account("bob").opening_balance  # 15.00
LOST_ORDER = 6802  # fixtures/host_rules.yaml "answer lost": journaled, never answered
CARD_ACCOUNT = "A-1001"  # behind the `approve` card


class Lab:
    """The host (TCP, and the wallet's HTTP entry) on its own thread, and terminal 10000001 talking to it."""

    def __init__(self, tmp_path: Path, dialect: str, rules: str | None = None, timeout: float = 2.0):
        fixtures = None
        if rules is not None:
            fixtures = tmp_path / "fixtures"
            fixtures.mkdir()
            (fixtures / "host_rules.yaml").write_text(f"rules:\n{rules}")
        self.db = tmp_path / "journal.sqlite"
        self.core = build_host(dialect, self.db, fixtures, clock=SteppingClock(START, timedelta(milliseconds=1)),
                               rng=random.Random(7))
        self.thread = HostThread(self.core, http=("127.0.0.1", 0))
        host, port = self.thread.start()
        http = self.thread.http_address
        assert http is not None
        self.http = f"http://{http[0]}:{http[1]}"
        profile = load_profile(TID, dialect=dialect, host=f"{host}:{port}", timeout=timeout, reversal_retries=1)
        self.state_path = tmp_path / "t.sqlite"
        self.traced: list[str] = []
        self.terminal = Terminal(profile, TcpLink(host, port, profile.framing), TerminalState(TID, self.state_path),
                                 SteppingClock(START, timedelta(seconds=1)), trace=self.traced.append,
                                 rng=random.Random(5))
        self._nonces = random.Random(11)

    def stop(self) -> None:
        self.thread.stop()
        self.core.close()
        self.terminal.state.close()

    def run(self, scenario: Callable[[Terminal], Awaitable[Any]]) -> Any:
        """Sign on, then play `scenario` on the terminal, in one event loop."""

        async def main() -> Any:
            try:
                assert (await self.terminal.sign_on()).approved
                return await scenario(self.terminal)
            finally:
                await self.terminal.link.close()

        return asyncio.run(main())

    def code_of(self, name: str, at: datetime | None = None) -> str:
        """The payment code `name`'s wallet app shows now (by the host's clock), or at `at`."""
        account = WALLETS.account(name)
        assert account is not None
        return generate(account.provider, account.number, account.secret, at or self.core.clock())

    def wallet(self, name: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return wallet_call(self.http, name, method, path, body, START, self._nonces)

    def pays(self, payload: str, name: str = "alice") -> dict[str, Any]:
        return self.wallet(name, "POST", "/wallet/v1/payments", {"payload": payload})

    def confirms(self, name: str, password: str) -> dict[str, Any]:
        """The wallet app lists the payment waiting for the password, and the payer types it."""
        (waiting,) = self.wallet(name, "GET", "/wallet/v1/payments")["payments"]
        return self.wallet(name, "POST", f"/wallet/v1/payments/{waiting['wallet_txn_id']}/confirm", {"password": password})

    def journal(self) -> Journal:
        """A second connection to the host's journal, as any reader would open it."""
        return Journal(self.db)

    def balance(self, account: str) -> int | None:
        journal = self.journal()
        try:
            return journal.balance(account)
        finally:
            journal.close()

    def host_batch(self, batch: str = "000001") -> Any:
        journal = self.journal()
        try:
            return journal.closed_batch(TID, batch)
        finally:
            journal.close()


def wallet_call(base_url: str, name: str, method: str, path: str, body: dict[str, Any] | None, at: datetime,
                nonces: random.Random) -> dict[str, Any]:
    """A request of `name`'s wallet app to the host's wallet entry, signed at `at` with the account's secret;
    its JSON answer (errors too)."""
    account = WALLETS.account(name)
    assert account is not None
    data = json.dumps(body).encode() if body is not None else b""
    headers = sign(account.secret, method, path, data, f"wallet:{name}", at, new_nonce(nonces))
    request = urllib.request.Request(base_url + path, data=data if method == "POST" else None, method=method,
                                     headers={**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


@pytest.fixture
def lab(tmp_path: Path):
    labs: list[Lab] = []

    def make(dialect: str, rules: str | None = None, timeout: float = 2.0) -> Lab:
        labs.append(Lab(tmp_path, dialect, rules, timeout))
        return labs[-1]

    yield make
    for made in labs:
        made.stop()


class FakeTime:
    """Monotonic seconds that move only when a flow sleeps; `on_nap(n)` lets the world act during the n-th nap."""

    def __init__(self, on_nap: Callable[[int], None] | None = None):
        self.now = 0.0
        self.naps: list[float] = []
        self.on_nap = on_nap

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds
        if self.on_nap is not None:
            self.on_nap(len(self.naps))


def debits_credits(terminal: Terminal) -> list[tuple[str, int, str | None]]:
    return [(e.kind, e.amount, e.order_no) for e in terminal.state.open_batch()]


# ---- merchant-presented orders ----


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_order_counts_once_a_query_says_the_wallet_paid_it_and_the_batch_balances(lab, dialect):
    pos = lab(dialect)

    async def scenario(t: Terminal):
        order = await t.qr_order(1250)
        assert order.approved and order.response_code == "00" and order.request_mti == "0100"
        assert order.status == "created" and len(order.order_no) == 16 and order.order_no in order.payload
        assert order.payload.startswith("000201010212") and order.expires_at == "2026-06-15T10:05:00"
        assert debits_credits(t) == []  # made, not paid: nothing counts yet
        waiting = await t.qr_query(order.order_no)
        assert (waiting.status, waiting.approved, waiting.response_code) == ("created", False, "00")
        paid = pos.pays(order.payload)
        assert paid["status"] == "paid"
        known = await t.qr_query(order.order_no)
        assert known.approved and (known.status, known.channel) == ("paid", "wechat")
        assert known.wallet_txn_id == paid["wallet_txn_id"] and known.payload is None
        await t.qr_query(order.order_no)  # asked again: counted once
        assert debits_credits(t) == [("qr_order", 1250, order.order_no)]
        closed = await t.batch_close()
        assert closed.closed and closed.balanced and closed.totals.combined.debit_amount == 1250
        return order.order_no

    order_no = pos.run(scenario)
    assert pos.host_batch().balanced
    assert pos.balance("wallet:alice") == ALICE - 1250
    journal = pos.journal()
    (row,) = [t for t in journal.transactions() if t.order_no == order_no]
    journal.close()
    assert (row.kind, row.status, row.channel) == ("qr_order", "approved", "wechat")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_collect_closes_an_order_nobody_paid_at_the_deadline(lab, dialect):
    pos = lab(dialect)
    time = FakeTime()
    seen: list[tuple[str, str | None]] = []

    async def scenario(t: Terminal):
        order = await t.qr_order(700)
        final = await qr_flows.collect(t, order, 10, 3, sleep=time.sleep, clock=time.clock,
                                       progress=lambda r: seen.append((r.operation, r.status)))
        with pytest.raises(TerminalError, match="closed already"):
            await t.qr_cancel(order.order_no)
        with pytest.raises(TerminalError, match="not one this terminal made"):
            await t.qr_cancel("2606150000009999")
        return final

    final = pos.run(scenario)
    assert time.naps == [3, 3, 3, 1]
    assert seen == [("qr_query", "created")] * 4 + [("qr_close", "closed")]
    assert (final.operation, final.status, final.approved, final.response_code) == ("qr_close", "closed", False, "00")
    journal = pos.journal()
    assert journal.order(final.order_no).status == "closed"
    journal.close()
    assert pos.terminal.state.open_batch() == [] and pos.terminal.state.qr_order(final.order_no).status == "closed"


def test_collect_stops_waiting_as_soon_as_a_query_says_paid(lab):
    pos = lab("cup")
    payload: list[str] = []
    time = FakeTime(on_nap=lambda n: pos.pays(payload[0]) if n == 2 else None)

    async def scenario(t: Terminal):
        order = await t.qr_order(880)
        payload.append(order.payload)
        return await qr_flows.collect(t, order, 60, 5, sleep=time.sleep, clock=time.clock)

    final = pos.run(scenario)
    assert time.naps == [5, 5]
    assert (final.operation, final.status, final.approved) == ("qr_query", "paid", True)
    assert debits_credits(pos.terminal) == [("qr_order", 880, final.order_no)]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_close_after_the_wallet_paid_counts_the_order_as_paid_and_the_batch_balances(lab, dialect):
    pos = lab(dialect)

    async def scenario(t: Terminal):
        order = await t.qr_order(990)
        assert pos.pays(order.payload)["status"] == "paid"
        final = await qr_flows.collect(t, order, 0, 1, sleep=FakeTime().sleep)
        assert (final.operation, final.response_code, final.status, final.approved) == ("qr_close", "00", "paid", True)
        assert debits_credits(t) == [("qr_order", 990, order.order_no)]
        return await t.batch_close()

    closed = pos.run(scenario)
    assert closed.closed and closed.balanced and pos.host_batch().balanced


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_order_left_unanswered_is_reversed_and_the_host_closes_it(lab, dialect):
    pos = lab(dialect, timeout=0.5)

    async def scenario(t: Terminal):
        lost = await t.qr_order(LOST_ORDER)
        assert lost.timed_out and lost.response_code is None and lost.order_no is None
        assert lost.reversal is not None and lost.reversal.acknowledged and lost.reversal.reason == "98"
        assert t.state.pending_reversal() is None and t.state.open_batch() == []
        return await t.batch_close()

    closed = pos.run(scenario)
    assert closed.balanced
    journal = pos.journal()
    (order,) = journal.orders()
    (row,) = [t for t in journal.transactions() if t.kind == "qr_order"]
    journal.close()
    assert (order.status, row.status) == ("reversed", "reversed")
    refused = pos.pays(order.payload)  # the code the terminal never showed can no longer be paid
    assert refused["error"]["code"] == "ORDER_CLOSED"
    assert pos.balance("wallet:alice") == ALICE


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_close_left_unanswered_reverses_the_order_and_the_wallet_that_paid_gets_it_back(lab, dialect):
    pos = lab(dialect, rules='  - {name: close lost, when: {processing_code: "920000"}, drop: true}\n', timeout=0.5)
    seen: list[str] = []

    async def scenario(t: Terminal):
        order = await t.qr_order(1500)
        assert pos.pays(order.payload)["status"] == "paid"  # paid just before the close: its answer is lost
        final = await qr_flows.collect(t, order, 0, 1, sleep=FakeTime().sleep, progress=lambda r: seen.append(r.operation))
        assert seen == ["qr_close", "reversal"]
        assert (final.operation, final.approved, final.status, final.order_no) == ("reversal", True, "reversed", order.order_no)
        assert final.reversal.reason == "98" and t.state.pending_reversal() is None
        assert t.state.qr_order(order.order_no).status == "reversed" and t.state.open_batch() == []
        return await t.batch_close()

    closed = pos.run(scenario)
    assert closed.balanced and closed.totals.combined.debit_count == 0
    assert pos.balance("wallet:alice") == ALICE


def test_batch_close_first_asks_the_open_orders_so_a_payment_nobody_queried_still_balances(lab):
    pos = lab("cup")

    async def scenario(t: Terminal):
        order = await t.qr_order(4200)
        pos.pays(order.payload)
        unpaid = await t.qr_order(300)
        closed = await t.batch_close()
        assert t.state.qr_order(order.order_no).status == "paid"
        assert t.state.qr_order(unpaid.order_no).status == "created"
        return closed

    closed = pos.run(scenario)
    assert closed.closed and closed.balanced and closed.totals.combined.debit_amount == 4200
    assert closed.uploaded == 1  # cup uploads always: the paid order, its order number where a card's PAN goes


def test_a_dialect_without_a_qr_data_field_cannot_carry_qr_kinds():
    cup = load_dialect("cup")
    plain = dataclasses.replace(cup, roles={k: v for k, v in cup.roles.items() if k != "qr_data"})
    with pytest.raises(ValueError, match="no qr_data role"):
        build_request(plain, "qr_query", tid=TID, mid="898310048160001", stan="000002", now=START, amount=None,
                      currency="156", card=None, pin_pad=True, batch_number=1, qr={"order_no": "1"})


# ---- scanned codes ----


@pytest.mark.parametrize("dialect", DIALECTS)
def test_alices_fresh_code_is_paid_at_once_and_journaled_with_its_channel(lab, dialect):
    pos = lab(dialect)
    code = pos.code_of("alice")

    async def scenario(t: Terminal):
        paid = await t.qr_scan(code, 2000)
        assert (paid.operation, paid.response_code, paid.approved, paid.status) == ("qr_sale", "00", True, "paid")
        assert paid.channel == "wechat" and paid.wallet_txn_id and paid.masked_pan is None
        assert debits_credits(t) == [("qr_sale", 2000, paid.order_no)]
        closed = await t.batch_close()
        assert closed.balanced
        return paid

    paid = pos.run(scenario)
    journal = pos.journal()
    (row,) = [t for t in journal.transactions() if t.kind == "qr_sale"]
    journal.close()
    assert (row.status, row.response_code, row.channel, row.order_no) == ("approved", "00", "wechat", paid.order_no)
    assert pos.balance("wallet:alice") == ALICE - 2000
    stored = b"".join(p.read_bytes() for p in pos.state_path.parent.glob("t.sqlite*"))
    assert code.encode() not in stored  # the state keeps order numbers, never the code
    assert pos.traced and not any(code in record for record in pos.traced)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_scan_above_300_waits_for_the_password_and_settle_scan_cancels_it_when_none_comes(lab, dialect):
    pos = lab(dialect)
    time = FakeTime()

    async def scenario(t: Terminal):
        paying = await t.qr_scan(pos.code_of("alice"), 30001)
        assert (paying.response_code, paying.approved, paying.status) == ("09", False, "paying")
        assert "password" in paying.message and t.state.qr_order(paying.order_no).status == "paying"
        final = await qr_flows.settle_scan(t, paying, 5, 2, sleep=time.sleep, clock=time.clock)
        assert time.naps == [2, 2, 1]
        assert (final.operation, final.approved, final.status, final.order_no) == ("reversal", True, "reversed", paying.order_no)
        assert final.reversal.reason == "17" and t.state.open_batch() == []
        return paying.order_no

    order_no = pos.run(scenario)
    journal = pos.journal()
    assert journal.order(order_no).status == "reversed"
    journal.close()
    assert pos.balance("wallet:alice") == ALICE


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_scan_waiting_for_the_password_counts_once_the_payer_confirms(lab, dialect):
    pos = lab(dialect)
    time = FakeTime(on_nap=lambda n: pos.confirms("alice", "123456") if n == 1 else None)

    async def scenario(t: Terminal):
        paying = await t.qr_scan(pos.code_of("alice"), 40000)
        final = await qr_flows.settle_scan(t, paying, 30, 2, sleep=time.sleep, clock=time.clock)
        assert (final.operation, final.status, final.approved, final.channel) == ("qr_query", "paid", True, "wechat")
        assert debits_credits(t) == [("qr_sale", 40000, paying.order_no)]

    pos.run(scenario)
    assert pos.balance("wallet:alice") == ALICE - 40000


def test_a_scan_paid_after_the_password_balances_at_batch_close(lab):
    pos = lab("cup")
    time = FakeTime(on_nap=lambda n: pos.confirms("alice", "123456") if n == 1 else None)

    async def scenario(t: Terminal):
        paying = await t.qr_scan(pos.code_of("alice"), 40000)
        await qr_flows.settle_scan(t, paying, 30, 2, sleep=time.sleep, clock=time.clock)
        return await t.batch_close()

    closed = pos.run(scenario)
    assert closed.closed and closed.balanced


@pytest.mark.parametrize("dialect", DIALECTS)
def test_declined_scans_count_nothing(lab, dialect):
    pos = lab(dialect)
    stale = pos.code_of("alice", START - timedelta(minutes=5))

    async def scenario(t: Terminal):
        poor = await t.qr_scan(pos.code_of("bob"), BOB + 100)
        expired = await t.qr_scan(stale, 100)
        frozen = await t.qr_scan(pos.code_of("dave"), 100)
        assert [(r.response_code, r.approved) for r in (poor, expired, frozen)] == [("51", False), ("14", False), ("62", False)]
        assert poor.message == "insufficient wallet balance" and t.state.open_batch() == [] and t.state.qr_orders() == []
        with pytest.raises(ValueError, match="offset 3") as bad:
            await t.qr_scan("139x" + stale[4:], 100)
        assert stale[4:] not in str(bad.value)

    pos.run(scenario)
    assert pos.balance("wallet:bob") == BOB and pos.balance("wallet:alice") == ALICE


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_emv_consumer_presented_code_is_sold_as_the_card_it_carries(lab, dialect):
    pos = lab(dialect)
    card = resolve_card("approve")
    payload = encode_cpm(aid="A000000333010101", pan=card.pan, expiry=card.expiry, label="UnionPay",
                         chip_data=bytes.fromhex("9F2608AABBCCDDEEFF00119F360200015F340101"))

    async def scenario(t: Terminal):
        sale = await t.qr_scan(payload, 1500)
        assert (sale.operation, sale.approved, sale.masked_pan, sale.order_no) == ("sale", True, card.masked_pan, None)
        assert "order_no" not in sale.to_json()  # a card sale reads as one
        assert debits_credits(t) == [("sale", 1500, None)]
        return await t.batch_close()

    assert pos.run(scenario).balanced
    journal = pos.journal()
    (row,) = journal.transactions()
    journal.close()
    assert (row.kind, row.entry_mode, row.status, row.pan_masked) == ("sale", "072", "approved", card.masked_pan)
    assert pos.balance(CARD_ACCOUNT) == 5_000_000 - 1500
    stored = b"".join(p.read_bytes() for p in pos.state_path.parent.glob("t.sqlite*"))
    assert card.pan.encode() not in stored


# ---- refunds ----


@pytest.mark.parametrize("dialect", DIALECTS)
def test_refunds_in_parts_never_exceed_what_was_paid_and_the_batch_balances(lab, dialect):
    pos = lab(dialect)

    async def scenario(t: Terminal):
        paid = await t.qr_scan(pos.code_of("alice"), 3000)
        first = await t.qr_refund(paid.order_no, 1000)
        assert (first.request_mti, first.response_code, first.refunded, first.status) == ("0220", "00", 1000, "paid")
        second = await t.qr_refund(paid.order_no, 1500)
        assert second.refunded == 2500
        too_much = await t.qr_refund(paid.order_no, 600)
        assert (too_much.response_code, too_much.approved) == ("13", False)
        with pytest.raises(TerminalError, match="refunded in part"):
            await t.qr_cancel(paid.order_no)
        last = await t.qr_refund(paid.order_no, 500)
        assert (last.refunded, last.status) == (3000, "refunded")
        assert t.state.qr_order(paid.order_no).refunded == 3000
        assert debits_credits(t) == [("qr_sale", 3000, paid.order_no)] + [("qr_refund", a, paid.order_no) for a in (1000, 1500, 500)]
        assert [a.sealed_card for a in t.state.answered_advices()] == [None] * 4  # no card: nothing sealed
        unknown = await t.qr_refund("2606159999999999", 100)
        assert unknown.response_code == "25"
        return await t.batch_close()

    closed = pos.run(scenario)
    assert closed.balanced and closed.totals.combined.credit_amount == 3000
    assert pos.host_batch().balanced
    assert pos.balance("wallet:alice") == ALICE


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_unanswered_refund_is_repeated_as_0221_and_refunds_once(lab, dialect):
    pos = lab(dialect, rules='  - {name: refund lost, when: {mti: "0220", processing_code: "940000"}, drop: true}\n',
              timeout=0.5)

    async def scenario(t: Terminal):
        paid = await t.qr_scan(pos.code_of("alice"), 2500)
        lost = await t.qr_refund(paid.order_no, 700)
        assert lost.queued and lost.timed_out and lost.response_code is None and lost.order_no == paid.order_no
        (queued,) = t.state.queued_advices()
        assert (queued.kind, queued.sealed_card, queued.masked_pan) == ("qr_refund", None, "")
        run = await t.send_advices()
        assert run.remaining == 0 and run.advices[0].mti == "0221" and run.advices[0].response_code == "00"
        assert t.state.qr_order(paid.order_no).refunded == 700
        assert debits_credits(t) == [("qr_sale", 2500, paid.order_no), ("qr_refund", 700, paid.order_no)]
        return await t.batch_close()

    assert pos.run(scenario).balanced
    assert pos.balance("wallet:alice") == ALICE - 2500 + 700


# ---- messages ----


@pytest.mark.parametrize("name, field", [("cup", 59), ("iso87ascii", 57), ("iso87binary", 57)])
def test_qr_requests_carry_qr_data_and_no_card(name, field):
    dialect = load_dialect(name)
    common = dict(tid=TID, mid="898310048160001", now=START, currency="156", pin_pad=True, batch_number=1)
    order = build_request(dialect, "qr_order", stan="000002", amount=1250, card=None, **common)
    assert (order.mti, order[3], order[4], order[49]) == ("0100", "900000", "000000001250", "156")
    assert field not in order
    query = build_request(dialect, "qr_query", stan="000003", amount=None, card=None, qr={"order_no": "2606150000000001"},
                          **common)
    assert 4 not in query and decode_qr_data(query[field]) == {"order_no": "2606150000000001"}
    sale = build_request(dialect, "qr_sale", stan="000004", amount=100, card=None, qr={"payment_code": "1" * 18}, **common)
    refund = build_request(dialect, "qr_refund", stan="000005", amount=100, card=None, qr={"order_no": "1"}, **common)
    assert (sale.mti, sale[3], refund.mti, refund[3]) == ("0200", "930000", "0220", "940000")
    for message in (order, query, sale, refund):
        assert not {2, 14, 22, 23, 35, 52, 55} & set(message.fields)
    if name == "cup":
        assert [m[60][:2] for m in (order, query, sale, refund)] == ["22", "00", "22", "25"]
    with pytest.raises(ValueError, match="no card"):
        build_request(dialect, "qr_sale", stan="000006", amount=100, card=resolve_card("approve"),
                      qr={"payment_code": "1" * 18}, **common)
    with pytest.raises(ValueError, match="order_no"):
        build_request(dialect, "qr_close", stan="000007", amount=None, card=None, qr={}, **common)
    with pytest.raises(ValueError, match="amount"):
        build_request(dialect, "qr_refund", stan="000008", amount=None, card=None, qr={"order_no": "1"}, **common)
    with pytest.raises(ValueError, match="no QR data"):
        build_request(dialect, "sale", stan="000009", amount=100, card=resolve_card("approve"), qr={"order_no": "1"},
                      **common)


def test_an_approval_that_names_no_order_or_another_order_is_not_taken():
    dialect = load_dialect("cup")
    query = Message("0100", {3: "910000", 11: "000003", 25: "00", 59: encode_qr_data({"order_no": "1"})})

    def answer(code: str, **data: str) -> Message:
        return Message("0110", {11: "000003", 39: code, **({59: encode_qr_data(data)} if data else {})})

    assert qr_answer_problem(dialect, query, answer("00", order_no="1", status="paid")) is None
    assert qr_answer_problem(dialect, query, answer("25")) is None  # a refusal needs no QR data
    assert "names no order" in qr_answer_problem(dialect, query, answer("00"))
    assert "not the 1 asked about" in qr_answer_problem(dialect, query, answer("00", order_no="2", status="paid"))
    assert "status" in qr_answer_problem(dialect, query, answer("00", order_no="1", status="lost"))
    broken = Message("0110", {11: "000003", 39: "00", 59: "02099123"})
    assert "field 59" in qr_answer_problem(dialect, query, broken)
