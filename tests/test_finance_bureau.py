"""The finance bureau over real TCP and a real SQLite file: notice queries,
idempotent confirmations, cancels up to reconciliation, the daily list,
every fault a host must survive, and refusals that leave the connection
serving. Also the notice store's codes and files."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import re
import socket
import time
from datetime import date, datetime

import pytest

from possim.acquirer.finance.bureau import Fault, FaultError, Faults, open_bureau
from possim.acquirer.finance.notices import (
    AlreadyReconciled,
    CodeLengths,
    FeeItem,
    FinanceConfig,
    Notice,
    NoticeError,
    NoticeStore,
    PaymentCodeError,
    check_pay_code,
    make_pay_code,
)
from possim.acquirer.finance.server import FinanceThread
from possim.wire import nontax
from possim.wire.nontax import FrameReader, NontaxMessage, decode, encode, frame, make_message

NOW = datetime(2025, 6, 1, 10, 0, 0)
KEY = FinanceConfig.from_fixtures().mac_key
FINE = "31010157462740291971"        # 200.00, unpaid, due 2030
LICENCE = "31010156080501553255"     # 110.00 in two items, unpaid
EXPIRED = "31010139944550089291"
CANCELLED = "31010199990247352912"


@pytest.fixture
def bureau(tmp_path):
    opened = open_bureau(tmp_path / "finance.sqlite", clock=lambda: NOW, rng=random.Random(5))
    yield opened
    opened.store.close()


@pytest.fixture
def finance(bureau):
    thread = FinanceThread(bureau)
    address = thread.start("127.0.0.1", 0)
    yield address
    thread.stop()


class Client:
    """A bank host's connection, in blocking sockets."""

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address, timeout=3)
        self.frames = FrameReader()
        self.waiting: list[bytes] = []
        self.rng = random.Random(11)

    def send(self, msg_type: str, body: dict) -> NontaxMessage:
        request = make_message(msg_type, body, "BANK01", "FINANCE", NOW, self.rng)
        self.sock.sendall(frame(encode(request, KEY)))
        return request

    def receive(self, timeout: float = 3.0) -> NontaxMessage | None:
        self.sock.settimeout(timeout)
        while not self.waiting:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            assert data, "the bureau closed the connection"
            self.waiting += self.frames.feed(data)
        return decode(self.waiting.pop(0), KEY)

    def ask(self, msg_type: str, body: dict) -> NontaxMessage:
        request = self.send(msg_type, body)
        answer = self.receive()
        assert answer is not None
        assert (answer.msg_type, answer.ref_msg_id) == (nontax.response_type(msg_type), request.msg_id)
        return answer

    def is_closed(self) -> bool:
        self.sock.settimeout(3)
        try:
            return self.sock.recv(100) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def bank(finance):
    client = Client(finance)
    yield client
    client.close()


def confirmation(code: str = FINE, amount: str = "200.00", trade: str = "T0001") -> dict:
    return {"payCode": code, "amount": amount, "currency": "CNY", "confirmTime": "20250601095959", "channel": "POS",
            "channelTradeNo": trade, "terminalId": "10000001"}


def resigned(xml: bytes, change) -> bytes:
    """`xml` with its <head>…</body> changed and signed again, by the hmac module rather than the code under test."""
    start, end = xml.index(b"<head>"), xml.index(b"</body>") + len(b"</body>")
    signed = change(xml[start:end])
    mac = hmac.new(KEY, signed, hashlib.sha256).hexdigest().upper().encode()
    return xml[:start] + signed + b"<mac>" + mac + b"</mac></message>"


def status_of(bank: Client, code: str = FINE) -> str:
    return bank.ask(nontax.MSG_STATUS_QUERY, {"payCode": code}).body["status"]


# ---- notice queries ----

def test_the_sample_notices(bureau):
    notices = {n.pay_code: n for n in bureau.store.list()}
    assert len(notices) == 6
    assert [n.pay_code for n in bureau.store.list("expired")] == [EXPIRED]
    assert [n.pay_code for n in bureau.store.list("cancelled")] == [CANCELLED]
    assert notices[LICENCE].amount == 11000 and [i.amount for i in notices[LICENCE].items] == [10000, 1000]
    assert all(n.amount == sum(i.amount for i in n.items) and n.currency == "156" for n in notices.values())


def test_query_of_a_payable_notice(bank):
    answer = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": LICENCE})
    assert answer.body["result"] == nontax.RESULT_OK
    assert answer.body | {"items": None} == {
        "result": "0000", "message": "payable", "payCode": LICENCE, "agencyCode": "310101002",
        "agencyName": "上海市公安局交通警察总队车辆管理所", "payerName": "李四", "amount": "110.00", "currency": "CNY",
        "dueDate": "20300630", "status": "UNPAID", "items": None,
    }
    assert [(i["code"], i["amount"]) for i in answer.body["items"]] == [("103040501", "100.00"), ("103040502", "10.00")]


def test_query_of_unknown_and_mistyped_codes(bank):
    unknown = make_pay_code("310101", random.Random(99))
    answer = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": unknown})
    assert (answer.body["result"], answer.body["message"], answer.body["payCode"]) == ("1003", "no such notice", unknown)
    assert "agencyName" not in answer.body
    mistyped = FINE[:10] + str((int(FINE[10]) + 1) % 10) + FINE[11:]
    answer = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": mistyped})
    assert answer.body["result"] == "1003" and "check digit" in answer.body["message"]


def test_query_of_expired_and_cancelled_notices(bank):
    expired = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": EXPIRED}).body
    assert (expired["result"], expired["status"], expired["dueDate"]) == ("1004", "EXPIRED", "20200331")
    cancelled = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": CANCELLED}).body
    assert (cancelled["result"], cancelled["status"]) == ("1005", "CANCELLED")


# ---- confirmations ----

def test_confirm_then_status_says_paid(bank, bureau):
    answer = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body
    assert (answer["result"], answer["payCode"], answer["channelTradeNo"]) == ("0000", FINE, "T0001")
    assert answer["confirmNo"].startswith("20250601")
    status = bank.ask(nontax.MSG_STATUS_QUERY, {"payCode": FINE}).body
    assert status == {"result": "0000", "payCode": FINE, "status": "PAID", "channelTradeNo": "T0001",
                      "confirmNo": answer["confirmNo"], "confirmTime": "20250601095959"}
    stored = bureau.store.get(FINE)
    assert (stored.status, stored.paid_trade_no, stored.paid_channel) == ("paid", "T0001", "POS")
    assert bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": FINE}).body["result"] == nontax.RESULT_ALREADY_PAID


def test_a_repeated_confirmation_is_already_paid_by_itself(bank, bureau):
    first = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body
    again = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body
    assert (again["result"], again["paidTradeNo"], again["confirmNo"]) == ("1001", "T0001", first["confirmNo"])
    other = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(trade="T0002")).body
    assert (other["result"], other["paidTradeNo"], other["channelTradeNo"]) == ("1001", "T0001", "T0002")
    assert "confirmNo" not in other
    assert len(bureau.store.daily_confirmations(NOW.date())) == 1
    assert bureau.store.confirmation("T0002") is None


def test_refused_confirmations_record_nothing(bank, bureau):
    wrong = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(amount="199.99")).body
    assert (wrong["result"], wrong["channelTradeNo"]) == ("1002", "T0001")
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(EXPIRED, "150.00", "T0002")).body["result"] == "1004"
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(CANCELLED, "100.00", "T0003")).body["result"] == "1005"
    unknown = make_pay_code("310101", random.Random(99))
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(unknown, trade="T0004")).body["result"] == "1003"
    assert bureau.store.daily_confirmations(NOW.date()) == []
    assert status_of(bank) == "UNPAID"


def test_a_trade_number_of_another_notice_is_refused(bank):
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body["result"] == "0000"
    reused = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(LICENCE, "110.00", "T0001")).body
    assert reused["result"] == nontax.RESULT_TRADE_NO_USED
    assert status_of(bank, LICENCE) == "UNPAID"


# ---- cancels and reconciliation ----

def test_a_cancelled_confirmation_makes_the_notice_payable_again(bank, bureau):
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    cancel = {"payCode": FINE, "channelTradeNo": "T0001", "reason": "card reversed"}
    assert bank.ask(nontax.MSG_CONFIRM_CANCEL, cancel).body["result"] == "0000"
    query = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": FINE}).body
    assert (query["result"], query["status"]) == ("0000", "UNPAID")
    assert bank.ask(nontax.MSG_CONFIRM_CANCEL, cancel).body["result"] == "0000"  # the bank may retry
    assert bureau.store.confirmation("T0001").state == "cancelled"
    assert bank.ask(nontax.MSG_CONFIRM_CANCEL, cancel | {"channelTradeNo": "T0009"}).body["result"] == "1007"
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(trade="T0001")).body["result"] == "1008"
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(trade="T0002")).body["result"] == "0000"


def test_no_cancel_after_the_day_is_reconciled(bank, bureau):
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    assert bureau.store.mark_reconciled(NOW.date()) == 1
    with pytest.raises(AlreadyReconciled):
        bureau.store.mark_reconciled(NOW.date())
    answer = bank.ask(nontax.MSG_CONFIRM_CANCEL, {"payCode": FINE, "channelTradeNo": "T0001", "reason": ""}).body
    assert answer["result"] == nontax.RESULT_DAY_RECONCILED
    assert status_of(bank) == "PAID"
    late = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(LICENCE, "110.00", "T0002")).body
    assert late["confirmNo"].startswith("20250602")  # booked to the next open day


def test_the_bank_closes_a_day_only_with_the_finance_systems_own_figures(bank, bureau):
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    wrong = bank.ask(nontax.MSG_DAY_RECONCILED, {"date": "20250601", "count": "1", "total": "201.00",
                                                 "currency": "CNY"}).body
    assert wrong["result"] == nontax.RESULT_AMOUNT_MISMATCH and not bureau.store.is_reconciled(NOW.date())
    closed = bank.ask(nontax.MSG_DAY_RECONCILED, {"date": "20250601", "count": "1", "total": "200.00",
                                                  "currency": "CNY"}).body
    assert closed["result"] == nontax.RESULT_OK and bureau.store.is_reconciled(NOW.date())
    again = bank.ask(nontax.MSG_DAY_RECONCILED, {"date": "20250601", "count": "1", "total": "200.00",
                                                 "currency": "CNY"}).body
    assert again["result"] == nontax.RESULT_DAY_RECONCILED
    cancel = bank.ask(nontax.MSG_CONFIRM_CANCEL, {"payCode": FINE, "channelTradeNo": "T0001", "reason": ""}).body
    assert cancel["result"] == nontax.RESULT_DAY_RECONCILED and status_of(bank) == "PAID"


def test_the_daily_list(bank):
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation(LICENCE, "110.00", "T0002"))
    bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation("31010195281670669848", "6200.00", "T0003"))
    bank.ask(nontax.MSG_CONFIRM_CANCEL, {"payCode": LICENCE, "channelTradeNo": "T0002", "reason": "reversed"})
    day = bank.ask(nontax.MSG_DAILY_LIST, {"date": "20250601"}).body
    assert (day["result"], day["count"], day["total"], day["currency"]) == ("0000", "2", "6400.00", "CNY")
    assert [(c["payCode"], c["agencyCode"], c["amount"], c["channelTradeNo"]) for c in day["confirmations"]] == [
        (FINE, "310101001", "200.00", "T0001"), ("31010195281670669848", "310101003", "6200.00", "T0003")]
    other = bank.ask(nontax.MSG_DAILY_LIST, {"date": "20250531"}).body
    assert (other["count"], other["total"], other["confirmations"]) == ("0", "0.00", [])


# ---- faults ----

def test_delay_processes_at_once_and_answers_late(bank, bureau):
    bureau.faults.add(nontax.MSG_PAYMENT_CONFIRM, "delay", seconds=0.4)
    started = time.monotonic()
    bank.send(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    bank.send(nontax.MSG_STATUS_QUERY, {"payCode": FINE})
    first, second = bank.receive(), bank.receive()
    assert time.monotonic() - started >= 0.4
    assert (first.msg_type, first.body["status"]) == ("2003", "PAID")  # the delay held up nothing else
    assert (second.msg_type, second.body["result"]) == ("2002", "0000")


def test_drop_answers_nothing_and_does_nothing(bank, bureau):
    bureau.faults.add(nontax.MSG_PAYMENT_CONFIRM, Fault("drop"))
    bank.send(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    assert bank.receive(timeout=0.4) is None
    assert status_of(bank) == "UNPAID"
    assert bureau.faults.pending() == 0


def test_lose_answer_records_the_payment_but_answers_nothing(bank, bureau):
    bureau.faults.add(nontax.MSG_PAYMENT_CONFIRM, "lose_answer")
    bank.send(nontax.MSG_PAYMENT_CONFIRM, confirmation())
    assert bank.receive(timeout=0.4) is None
    assert status_of(bank) == "PAID"
    retry = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body
    assert (retry["result"], retry["paidTradeNo"]) == ("1001", "T0001")
    assert retry["confirmNo"] == bureau.store.confirmation("T0001").confirm_no


def test_error_and_already_paid_faults_do_nothing(bank, bureau):
    bureau.faults.add(nontax.MSG_NOTICE_QUERY, "error", times=2)
    for _ in range(2):
        failed = bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": FINE}).body
        assert failed == {"result": "9999", "message": "system error", "payCode": FINE}
    assert bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": FINE}).body["result"] == "0000"
    bureau.faults.add(nontax.MSG_PAYMENT_CONFIRM, "already_paid")
    claimed = bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body
    assert claimed["result"] == "1001" and claimed["paidTradeNo"] != "T0001"
    assert status_of(bank) == "UNPAID"


def test_faults_from_a_file(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text("- {msg_type: 1002, fault: delay, seconds: 1.5, times: 2}\n"
                    "- {msg_type: '1001', fault: drop}\n", encoding="utf-8")
    faults = Faults.from_file(path)
    assert faults.take("1002") == Fault("delay", 1.5) and faults.pending("1002") == 1
    assert faults.take("1001") == Fault("drop") and faults.take("1001") is None
    path.write_text("- {msg_type: 1002, fault: drop}\n- {msg_type: 1001, fault: already_paid}\n", encoding="utf-8")
    with pytest.raises(FaultError, match=f"{path} line 2: already_paid answers a payment confirmation"):
        Faults.from_file(path)
    path.write_text("- {msg_type: 1002, fault: delay}\n", encoding="utf-8")
    with pytest.raises(FaultError, match="line 1: a delay needs seconds > 0"):
        Faults.from_file(path)


# ---- refusals and the connection ----

def test_malformed_and_bad_mac_requests_are_answered_and_the_connection_serves_on(bank, bureau):
    bank.sock.sendall(frame(b"<message><head>"))
    unreadable = bank.receive()
    assert (unreadable.msg_type, unreadable.body["result"]) == ("2000", "9002")
    good = make_message(nontax.MSG_PAYMENT_CONFIRM, confirmation(), "BANK01", "FINANCE", NOW, random.Random(1))
    forged = encode(good, KEY).replace(b"200.00", b"000.01")
    bank.sock.sendall(frame(forged))
    answer = bank.receive()
    assert (answer.msg_type, answer.ref_msg_id, answer.receiver) == ("2002", good.msg_id, "BANK01")
    assert (answer.body["result"], answer.body["payCode"], answer.body["channelTradeNo"]) == ("9001", FINE, "T0001")
    assert bureau.store.confirmation("T0001") is None
    without_amount = resigned(encode(good, KEY), lambda signed: re.sub(rb"<amount>[^<]*</amount>", b"", signed))
    bank.sock.sendall(frame(without_amount))
    answer = bank.receive()
    assert (answer.body["result"], answer.body["message"]) == ("9002", "body/amount: is missing")
    assert bank.ask(nontax.MSG_PAYMENT_CONFIRM, confirmation()).body["result"] == "0000"


def test_a_garbage_frame_closes_only_that_connection(finance, bank):
    rogue = Client(finance)
    try:
        rogue.sock.sendall(b"12x456<message/>")
        assert rogue.is_closed()
    finally:
        rogue.close()
    assert bank.ask(nontax.MSG_NOTICE_QUERY, {"payCode": FINE}).body["result"] == "0000"


def test_handle_never_raises_and_never_logs_names(bureau, caplog):
    caplog.set_level(logging.DEBUG, logger="possim.finance")
    empty = decode(bureau.handle(b"").xml, KEY)
    assert (empty.msg_type, empty.body["result"]) == ("2000", "9002")
    query = encode(make_message("1001", {"payCode": LICENCE}, "BANK01", "FINANCE", NOW, random.Random(1)), KEY)
    assert "李四" in decode(bureau.handle(query).xml, KEY).body["payerName"]
    assert "李四" not in caplog.text and LICENCE in caplog.text
    bureau.store.close()
    failed = decode(bureau.handle(query).xml, KEY)
    assert (failed.msg_type, failed.body["result"], failed.body["payCode"]) == ("2001", "9999", LICENCE)


# ---- the notice store ----

def test_pay_codes_carry_a_luhn_digit_and_a_region_length():
    lengths = CodeLengths({"310000": 20, "440300": 18}, default=19)
    rng = random.Random(3)
    assert len(make_pay_code("310101", rng, lengths)) == 20
    assert len(make_pay_code("440305", rng, lengths)) == 18  # a district of city 440300
    assert len(make_pay_code("440105", rng, lengths)) == 19  # no entry: the default
    shenzhen = make_pay_code("440300", rng, lengths)
    assert len(shenzhen) == 18
    check_pay_code(shenzhen, lengths)
    with pytest.raises(PaymentCodeError, match="check digit"):
        check_pay_code(shenzhen[:-1] + str((int(shenzhen[-1]) + 1) % 10), lengths)
    with pytest.raises(PaymentCodeError, match="has 19 digits; region 310101 uses 20"):
        check_pay_code(FINE[:-1], lengths)
    with pytest.raises(PaymentCodeError, match="character 3 is not a digit"):
        check_pay_code("31O101", lengths)


def test_add_refuses_a_notice_whose_items_do_not_add_up(tmp_path):
    store = NoticeStore(tmp_path / "f.sqlite", clock=lambda: NOW)
    try:
        code = make_pay_code("310101", random.Random(1))
        items = (FeeItem("1", "fine", 10000), FeeItem("2", "fee", 500))
        with pytest.raises(NoticeError, match=f"notice {code}, field amount: 10000 is not the sum of the items, 10500"):
            store.add(Notice(code, "310101001", "traffic", "someone", items, 10000, "156", "2030-01-01"))
        added = store.add(Notice(code, "310101001", "traffic", "someone", items, 10500, "156", "2030-01-01"))
        assert (added.status, added.created_at) == ("unpaid", "2025-06-01T10:00:00")
        with pytest.raises(NoticeError, match="already holds"):
            store.add(added)
    finally:
        store.close()


def test_load_csv_groups_items_and_names_bad_lines(tmp_path):
    store = NoticeStore(tmp_path / "f.sqlite", agencies={"310101001": "黄浦区交通管理支队"}, clock=lambda: NOW)
    one, two = make_pay_code("310101", random.Random(1)), make_pay_code("310101", random.Random(2))
    path = tmp_path / "notices.csv"
    path.write_text("pay_code,agency_code,payer_name,due_date,item_code,item_name,item_amount\n"
                    f"{one},310101001,甲,2030-01-01,A,fine,100.00\n"
                    f"{two},310101001,乙,2030-01-01,A,fine,20.00\n"
                    f"{one},310101001,甲,2030-01-01,B,fee,5.50\n", encoding="utf-8")
    try:
        assert store.load(path) == 2
        assert store.load(path) == 0
        loaded = store.get(one)
        assert (loaded.amount, loaded.agency_name, len(loaded.items)) == (10550, "黄浦区交通管理支队", 2)
        bad = tmp_path / "bad.csv"
        bad.write_text("pay_code,agency_code,payer_name,due_date,item_code,item_name,item_amount\n"
                       f"{two[:-1]}0,310101001,乙,2030-01-01,A,fine,1.00\n"
                       f"{one},310101001,甲,2030-01-01,A,fine,1.005\n", encoding="utf-8")
        with pytest.raises(NoticeError, match=f"{bad} line 3, field item_amount: .*more than 2 decimal places"):
            store.load(bad)
    finally:
        store.close()


def test_load_yaml_names_the_line_and_adds_nothing_on_error(tmp_path):
    store = NoticeStore(tmp_path / "f.sqlite", clock=lambda: NOW)
    good, bad = make_pay_code("310101", random.Random(1)), make_pay_code("310101", random.Random(2))
    path = tmp_path / "notices.yaml"
    path.write_text(f"""agencies:
  - {{code: "310101009", name: "测试单位"}}
notices:
  - pay_code: "{good}"
    agency: "310101009"
    payer_name: 甲
    due_date: 2030-01-01
    items:
      - {{code: A, name: fine, amount: "1.00"}}
  - pay_code: "{bad}"
    agency: "310101009"
    payer_name: 乙
    due_date: 2030-01-01
    items:
      - {{code: A, name: fine, amount: 1.00}}
""", encoding="utf-8")
    try:
        with pytest.raises(NoticeError, match=f"{path} line 15, field amount: write amounts as quoted"):
            store.load(path)
        assert store.list() == []
    finally:
        store.close()


def test_expiry_follows_the_clock(tmp_path):
    today = [date(2030, 12, 31)]
    store = NoticeStore(tmp_path / "f.sqlite", clock=lambda: datetime.combine(today[0], datetime.min.time()))
    try:
        store.load(FinanceConfig.from_fixtures().source)
        assert store.get(FINE).status == "unpaid"
        today[0] = date(2031, 1, 1)
        assert store.get(FINE).status == "expired"
    finally:
        store.close()
