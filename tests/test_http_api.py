"""The host's HTTP API over real HTTP on loopback, held to its contract: every request a test sends and every
answer it gets is validated against docs/openapi.yaml with openapi-core, and every refusal is checked to have
its documented code and status and to have changed nothing in the journal.

The host is a HostThread serving the API on an ephemeral port of 127.0.0.1, with the shipped partners and a
journal in tmp_path; its SteppingClock also signs every request, so signatures are fresh to it. Requests are
signed with wire.api_signature and sent byte for byte with http.client, so a test can send exactly what it
means: a duplicated header, a body other than the one signed, a percent-encoded path. The wallet app
(terminal/wallet_app.py) pays an order's PNG as a customer would; a POS terminal scans a payment code over
ISO 8583 for the payments that wait for the payer's password.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from host_support import MID, TID, TestTerminal, host_clock, sign_on
from possim.acquirer.core import build_host
from possim.acquirer.journal import Journal
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostThread
from possim.acquirer.wallets import WalletNetwork
from possim.terminal.wallet_app import WalletApp, login, scanned_payload
from possim.wire.api_signature import new_nonce, sign
from possim.wire.clock import SteppingClock
from possim.wire.emv_qr import decode_mpm, dynamic_order_qr, encode_mpm
from possim.wire.message import Message
from possim.wire.payment_code import generate
from possim.wire.qr_data import decode_qr_data, encode_qr_data
from possim.wire.qr_image import read_qr_png

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
SERVER = SPEC["servers"][0]["url"]
"""openapi-core finds operations under the document's own server; requests are checked as if sent there."""
PARTNERS = Partners.from_fixtures()
WALLETS = WalletNetwork.from_fixtures()
CITYHALL, LICENSING = "cityhall-web", "licensing-app"
STATUS = {"INVALID_REQUEST": 400, "MISSING_HEADER": 400, "BAD_SIGNATURE": 401, "UNKNOWN_PARTNER": 401,
          "STALE_TIMESTAMP": 401, "ORDER_NOT_FOUND": 404, "REFUND_NOT_FOUND": 404, "PAYMENT_NOT_FOUND": 404}
"""The status each error code fixes (docs/openapi.yaml, Errors); every other code is 409."""


def opening(account: str) -> int:
    found = WALLETS.account(account)
    assert found is not None
    return found.opening_balance


def key_of(caller: str) -> bytes:
    if caller.startswith("wallet:"):
        account = WALLETS.account(caller.removeprefix("wallet:"))
        assert account is not None
        return account.secret
    key = PARTNERS.key(caller)
    assert key is not None
    return key


@dataclass(frozen=True)
class Exchange:
    """One request exactly as sent, and its answer."""

    method: str
    target: str
    body: bytes
    headers: list[tuple[str, str]]
    status: int
    answer: bytes
    answer_headers: dict[str, str]

    def json(self) -> dict[str, Any]:
        value = json.loads(self.answer)
        assert isinstance(value, dict)
        return value

    @property
    def content_type(self) -> str:
        return self.answer_headers.get("Content-Type", "")

    @property
    def error(self) -> dict[str, str]:
        return self.json()["error"]


@dataclass
class Api:
    contract: OpenAPI
    clock: SteppingClock
    db_path: Path
    http_port: int
    tcp_port: int
    thread: HostThread
    rng: random.Random = field(default_factory=lambda: random.Random(6))

    def send(self, method: str, target: str, body: dict[str, Any] | bytes | None = None, *, caller: str = CITYHALL,
             content_type: str | None = "application/json", at: datetime | None = None, nonce: str | None = None,
             edit: Callable[[list[tuple[str, str]]], None] | None = None, signed: bool = True,
             signed_body: bytes | None = None, fits: bool = True) -> Exchange:
        """Sign (unless not `signed`; over `signed_body` when given) and send; `edit` changes the headers after signing.

        `fits`: whether the request is one the document allows — checked either way, as is the answer.
        """
        data = json.dumps(body, separators=(",", ":")).encode() if isinstance(body, dict) else body or b""
        headers: list[tuple[str, str]] = []
        if signed:
            headers = list(sign(key_of(caller), method, target, data if signed_body is None else signed_body, caller,
                                at or self.clock(), nonce or new_nonce(self.rng)).items())
        if data and content_type is not None:
            headers.append(("Content-Type", content_type))
        if edit is not None:
            edit(headers)
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if data or method == "POST":
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data or None)
            answer = connection.getresponse()
            exchange = Exchange(method, target, data, headers, answer.status, answer.read(), dict(answer.headers))
        finally:
            connection.close()
        self._check(exchange, fits)
        return exchange

    def refused(self, code: str, method: str, target: str, body: dict[str, Any] | bytes | None = None, *,
                names: str | None = None, **options: Any) -> Exchange:
        """A request answered `code` with its status, whose message names `names`, that changed nothing."""
        before = self.snapshot()
        exchange = self.send(method, target, body, **options)
        assert (exchange.status, exchange.error["code"]) == (STATUS.get(code, 409), code), exchange.answer
        if names is not None:
            assert names in exchange.error["message"], exchange.error
        assert self.snapshot() == before
        return exchange

    def _check(self, exchange: Exchange, fits: bool) -> None:
        split = urlsplit(exchange.target)
        sent_type = next((v for n, v in exchange.headers if n.lower() == "content-type"), "")
        request = MockRequest(SERVER, exchange.method, unquote(split.path), args=dict(parse_qsl(split.query)),
                              headers=exchange.headers, data=exchange.body or None, content_type=sent_type)
        response = MockResponse(exchange.answer, exchange.status, headers=exchange.answer_headers,
                                content_type=exchange.content_type)
        if fits:
            self.contract.validate_request(request)
        else:
            with pytest.raises(OpenAPIError):
                self.contract.validate_request(request)
        self.contract.validate_response(request, response)

    # ---- the journal, read as any reader would ----

    def journal(self) -> Journal:
        return Journal(self.db_path)

    def snapshot(self) -> tuple[Any, ...]:
        journal = self.journal()
        try:
            return journal.orders(), journal.balances(), journal.transactions(), journal.notifications()
        finally:
            journal.close()

    def balance(self, account: str) -> int | None:
        journal = self.journal()
        try:
            return journal.balance(f"wallet:{account}")
        finally:
            journal.close()

    # ---- shortcuts ----

    def create(self, out_order_no: str, amount: int, **extra: Any) -> dict[str, Any]:
        created = self.send("POST", "/v1/orders", {"out_order_no": out_order_no, "amount": amount, **extra})
        assert created.status == 201, created.answer
        return created.json()

    def pay(self, order: dict[str, Any], account: str = "alice", **extra: Any) -> Exchange:
        return self.send("POST", "/wallet/v1/payments", {"payload": order["payload"], **extra}, caller=f"wallet:{account}")

    def wallet_app(self, account: str = "alice") -> WalletApp:
        return WalletApp(login(account), f"127.0.0.1:{self.http_port}", clock=self.clock, rng=self.rng)


@pytest.fixture(scope="module")
def contract() -> OpenAPI:
    return OpenAPI.from_dict(SPEC)


@pytest.fixture
def api(tmp_path: Path, contract: OpenAPI) -> Iterator[Api]:
    clock = host_clock()
    core = build_host("cup", tmp_path / "journal.sqlite", clock=clock)
    thread = HostThread(core, http=("127.0.0.1", 0), partners=PARTNERS)
    _, tcp_port = thread.start()
    assert thread.http_address is not None
    try:
        yield Api(contract, clock, tmp_path / "journal.sqlite", thread.http_address[1], tcp_port, thread)
    finally:
        thread.stop()
        core.close()


def error_schema_fits(value: Any) -> bool:
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(SPEC))
    return Draft202012Validator({"$ref": "urn:doc#/components/schemas/Error"}, registry=registry).is_valid(value)


# ---- orders ----


def test_an_order_is_created_its_repeat_answers_the_same_order_and_other_content_is_refused(api: Api) -> None:
    created = api.send("POST", "/v1/orders", {"out_order_no": "INV-1", "amount": 12500, "description": "Parking permit"})
    assert created.status == 201 and created.answer_headers["Location"] == "/v1/orders/INV-1"
    order = created.json()
    assert (order["partner_id"], order["merchant_id"], order["terminal_id"]) == (CITYHALL, MID, "WEB00001")
    assert (order["kind"], order["status"], order["amount"], order["currency"]) == ("mpm_dynamic", "created", 12500, "156")
    lifetime = datetime.fromisoformat(order["expires_at"]) - datetime.fromisoformat(order["created_at"])
    assert lifetime == timedelta(seconds=300)
    fields = decode_mpm(order["payload"], strict=True).fields
    assert (fields["01"], fields["54"], fields["62"]["05"], fields["62"]["07"]) == (
        "12", "125.00", order["order_no"], "WEB00001")
    assert read_qr_png(base64.b64decode(order["qr_png"])) == order["payload"]

    # The same request, defaults spelled out, is the same order.
    again = api.send("POST", "/v1/orders", {"out_order_no": "INV-1", "amount": 12500, "description": "Parking permit",
                                            "currency": "156", "merchant_id": MID, "expires_in": 300})
    assert again.status == 200 and again.json() == order
    api.refused("OUT_ORDER_NO_REUSED", "POST", "/v1/orders", {"out_order_no": "INV-1", "amount": 12600}, names="INV-1")
    api.refused("OUT_ORDER_NO_REUSED", "POST", "/v1/orders", {"out_order_no": "INV-1", "amount": 12500})
    orders = api.snapshot()[0]
    assert [(o.out_order_no, o.status) for o in orders] == [("INV-1", "created")]
    row = next(t for t in api.snapshot()[2] if t.order_no == order["order_no"])
    assert (row.status, row.terminal_id, row.posted_amount) == ("pending", "WEB00001", 0)


def test_the_qr_png_and_the_query_show_the_order_as_created(api: Api) -> None:
    order = api.create("INV-2", 800, expires_in=900)
    png = api.send("GET", "/v1/orders/INV-2/qr.png")
    assert png.status == 200 and png.content_type == "image/png"
    assert png.answer == base64.b64decode(order["qr_png"]) and read_qr_png(png.answer) == order["payload"]
    read = api.send("GET", "/v1/orders/INV-2")
    assert read.status == 200 and read.json() == {k: v for k, v in order.items() if k != "qr_png"}
    # The signature is over the target as sent: a query, a percent-encoded letter.
    assert api.send("GET", "/v1/orders/INV-2?lang=en").json()["order_no"] == order["order_no"]
    assert api.send("GET", "/v1/orders/%49NV-2").json()["order_no"] == order["order_no"]
    api.refused("ORDER_NOT_FOUND", "GET", "/v1/orders/INV-404")
    api.refused("ORDER_NOT_FOUND", "GET", "/v1/orders/INV-2/qr.png", caller=LICENSING)  # another partner's number
    api.refused("INVALID_REQUEST", "GET", "/v1/orders/INV%202", names="out_order_no", fits=False)


def test_closing_an_unpaid_order_again_answers_it_closed_and_a_paid_one_is_refused(api: Api) -> None:
    order = api.create("INV-3", 800)
    closed = api.send("POST", "/v1/orders/INV-3/close")
    assert closed.status == 200 and closed.json()["status"] == "closed" and closed.json()["closed_at"]
    again = api.send("POST", "/v1/orders/INV-3/close", {})
    assert again.status == 200 and again.json() == closed.json()
    api.refused("ORDER_CLOSED", "POST", "/wallet/v1/payments", {"payload": order["payload"]}, caller="wallet:alice")
    api.refused("INVALID_REQUEST", "POST", "/v1/orders/INV-3/close", {"reason": "x"}, names="reason", fits=False)
    paid = api.create("INV-4", 900)
    assert api.pay(paid).json()["status"] == "paid"
    api.refused("ORDER_PAID", "POST", "/v1/orders/INV-4/close")
    api.refused("ORDER_NOT_FOUND", "POST", "/v1/orders/INV-4/close", caller=LICENSING)
    assert api.balance("alice") == opening("alice") - 900


def test_refunds_in_parts_are_idempotent_and_never_exceed_what_was_paid(api: Api) -> None:
    api.create("INV-5", 10000)
    api.refused("ORDER_NOT_PAID", "POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-0", "amount": 100})
    order = api.send("GET", "/v1/orders/INV-5").json()
    assert api.pay(order).json()["status"] == "paid"
    first = api.send("POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-1", "amount": 2500, "reason": "shortened"})
    assert first.status == 201
    assert first.json() | {"created_at": None} == {"out_refund_no": "RF-1", "order_no": order["order_no"], "amount": 2500,
                                                   "currency": "156", "status": "succeeded", "refunded_total": 2500,
                                                   "created_at": None}
    repeat = api.send("POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-1", "amount": 2500})
    assert repeat.status == 200 and repeat.json() == first.json()
    api.refused("AMOUNT_MISMATCH", "POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-1", "amount": 3000})
    api.refused("REFUND_EXCEEDS_REMAINING", "POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-2", "amount": 7501})
    rest = api.send("POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-2", "amount": 7500})
    assert rest.status == 201 and rest.json()["refunded_total"] == 10000
    assert api.send("GET", "/v1/orders/INV-5").json()["status"] == "refunded"
    api.refused("REFUND_EXCEEDS_REMAINING", "POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-3", "amount": 1})
    late_repeat = api.send("POST", "/v1/orders/INV-5/refunds", {"out_refund_no": "RF-1", "amount": 2500})
    assert late_repeat.status == 200 and late_repeat.json()["refunded_total"] == 10000
    read = api.send("GET", "/v1/orders/INV-5/refunds/RF-2")
    assert read.status == 200 and read.json() == rest.json()
    api.refused("REFUND_NOT_FOUND", "GET", "/v1/orders/INV-5/refunds/RF-9", names="RF-9")
    api.refused("ORDER_NOT_FOUND", "GET", "/v1/orders/INV-6/refunds/RF-1")
    assert api.balance("alice") == opening("alice")
    rows = [t for t in api.snapshot()[2] if t.kind == "qr_refund"]
    assert [(t.amount, t.posted_amount, t.channel, t.status) for t in rows] == [
        (2500, -2500, "wechat", "approved"), (7500, -7500, "wechat", "approved")]


def test_a_currency_other_than_the_merchants_is_a_conflict(api: Api) -> None:
    api.refused("CURRENCY_MISMATCH", "POST", "/v1/orders", {"out_order_no": "USD-1", "amount": 100, "currency": "840"},
                names="840")


# ---- signatures ----


def test_signature_failures_are_refused_and_a_refused_signature_does_not_spend_its_nonce(api: Api) -> None:
    order = {"out_order_no": "SIG-1", "amount": 100}
    tampered = api.refused("BAD_SIGNATURE", "POST", "/v1/orders", order, signed_body=b'{"out_order_no":"SIG-1","amount":1}')
    assert dict(tampered.headers)["X-Possim-Signature"] not in tampered.answer.decode()
    assert key_of(CITYHALL).hex() not in tampered.answer.decode()
    api.refused("BAD_SIGNATURE", "POST", "/v1/orders", order, edit=replace("X-Possim-Signature", lambda v: v[::-1]))
    api.refused("BAD_SIGNATURE", "GET", "/v1/orders/SIG-1", edit=replace("X-Possim-Partner", lambda _: LICENSING))
    api.refused("STALE_TIMESTAMP", "POST", "/v1/orders", order, at=api.clock() - timedelta(seconds=301),
                names="X-Possim-Timestamp")
    api.refused("STALE_TIMESTAMP", "POST", "/v1/orders", order, at=api.clock() + timedelta(seconds=302))
    assert api.send("POST", "/v1/orders", order, at=api.clock() - timedelta(seconds=299)).status == 201
    nonce = new_nonce(random.Random(1))
    again = {"out_order_no": "SIG-2", "amount": 5}
    api.refused("BAD_SIGNATURE", "POST", "/v1/orders", again, nonce=nonce, signed_body=b"{}")
    api.refused("STALE_TIMESTAMP", "POST", "/v1/orders", again, nonce=nonce, at=api.clock() - timedelta(hours=1))
    assert api.send("POST", "/v1/orders", again, nonce=nonce).status == 201
    api.refused("REPLAYED_REQUEST", "POST", "/v1/orders", {"out_order_no": "SIG-3", "amount": 5}, nonce=nonce,
                names="X-Possim-Nonce")
    # A nonce is the partner's own: another partner may use the same one.
    assert api.send("GET", "/v1/orders/SIG-2", caller=LICENSING, nonce=nonce).error["code"] == "ORDER_NOT_FOUND"


def replace(header: str, change: Callable[[str], str]) -> Callable[[list[tuple[str, str]]], None]:
    """An `edit` that changes one header's value after signing."""
    def edit(headers: list[tuple[str, str]]) -> None:
        headers[:] = [(n, change(v) if n == header else v) for n, v in headers]
    return edit


def test_an_unknown_partner_is_refused_before_its_timestamp_is_looked_at(api: Api) -> None:
    unknown = replace("X-Possim-Partner", lambda _: "nobody")
    api.refused("UNKNOWN_PARTNER", "POST", "/v1/orders", {"out_order_no": "U-1", "amount": 5}, edit=unknown)
    api.refused("UNKNOWN_PARTNER", "GET", "/v1/orders/U-1", edit=unknown, at=api.clock() - timedelta(days=1))


@pytest.mark.parametrize("header", ["X-Possim-Partner", "X-Possim-Timestamp", "X-Possim-Nonce", "X-Possim-Signature"])
def test_a_missing_repeated_or_malformed_header_is_refused_naming_it(api: Api, header: str) -> None:
    order = {"out_order_no": "HDR-1", "amount": 5}

    def missing(headers: list[tuple[str, str]]) -> None:
        headers[:] = [(n, v) for n, v in headers if n != header]

    api.refused("MISSING_HEADER", "POST", "/v1/orders", order, names=header, edit=missing, fits=False)
    api.refused("MISSING_HEADER", "POST", "/v1/orders", order, names=header,
                edit=lambda h: h.append((header.lower(), dict(h)[header])))
    api.refused("MISSING_HEADER", "POST", "/v1/orders", order, names=header,
                edit=replace(header, lambda v: v[:3] + " " + v[3:]))


# ---- what is not a valid request ----

PAD = b" " * (65536 - len(b'{"out_order_no":"BIG-1","amount":1}'))
"""Whitespace that makes that body exactly 64 KiB, the most the host reads."""


# `fits` says whether openapi-core finds the request allowed by the document's schemas. The True ones break rules
# only the document's prose states: amounts are JSON integers (JSON Schema counts 100.0 as one), bodies are UTF-8
# of at most 64 KiB with each member once, the merchant is the partner's own, the currency a known ISO 4217 code.


@pytest.mark.parametrize("body, content_type, names, fits", [
    (b'{"out_order_no":"B-1","amount":1', "application/json", "JSON", False),
    (b'[{"out_order_no":"B-1","amount":1}]', "application/json", "object", False),
    ({"out_order_no": "B-1", "amount": 1, "colour": "red"}, "application/json", "colour", False),
    (b'{"out_order_no":"B-1","amount":100.0}', "application/json", "100.0", True),
    ({"out_order_no": "B-1", "amount": "100"}, "application/json", "amount", False),
    ({"out_order_no": "B-1", "amount": 0}, "application/json", "amount", False),
    ({"out_order_no": "B-1", "amount": 1_000_000_000_000}, "application/json", "amount", False),
    ({"out_order_no": "B-1"}, "application/json", "amount", False),
    ({"out_order_no": "B 1", "amount": 1}, "application/json", "out_order_no", False),
    ({"out_order_no": "B-1", "amount": 1, "description": None}, "application/json", "description", False),
    ({"out_order_no": "B-1", "amount": 1, "expires_in": 59}, "application/json", "expires_in", False),
    ({"out_order_no": "B-1", "amount": 1, "notify_url": "ftp://x/"}, "application/json", "notify_url", False),
    ({"out_order_no": "B-1", "amount": 1, "merchant_id": "898310048160002"}, "application/json", "merchant_id", True),
    ({"out_order_no": "B-1", "amount": 1, "currency": "999"}, "application/json", "currency", True),
    (b'{"out_order_no":"B-1","amount":1,"amount":2}', "application/json", "amount", True),
    ({"out_order_no": "B-1", "amount": 1}, "text/plain", "application/json", False),
    ({"out_order_no": "B-1", "amount": 1}, None, "application/json", False),
    ({"out_order_no": "B-1", "amount": 1}, "application/json; charset=latin-1", "UTF-8", True),
    ('{"out_order_no":"B-1","amount":1}'.encode("utf-16"), "application/json", "UTF-8", True),
    (b'{"out_order_no":"BIG-1","amount":1}' + PAD + b" ", "application/json", "64 KiB", True),
], ids=["truncated", "array", "unknown-member", "float-amount", "string-amount", "zero-amount", "13-digit-amount",
        "no-amount", "bad-out-order-no", "null-member", "short-expiry", "ftp-notify-url", "other-merchant",
        "unknown-currency", "repeated-member", "text-plain", "untyped", "latin-1", "utf-16", "over-64-KiB"])
def test_an_invalid_create_request_is_refused_naming_what_is_wrong(api: Api, body: Any, content_type: str | None,
                                                                    names: str, fits: bool) -> None:
    api.refused("INVALID_REQUEST", "POST", "/v1/orders", body, content_type=content_type, names=names, fits=fits)


def test_a_body_of_exactly_64_kib_is_read(api: Api) -> None:
    body = b'{"out_order_no":"BIG-1","amount":1}' + PAD
    assert len(body) == 65536
    assert api.send("POST", "/v1/orders", body).status == 201
    assert api.send("POST", "/v1/orders", body.rstrip() + b" " * 10).status == 200  # the same content again


@pytest.mark.parametrize("method, target, status", [
    ("GET", "/v1/shops", 404), ("POST", "/v1/orders/INV-1/refunds/RF-1/x", 404), ("GET", "/v1/orders/INV-1/qr.jpg", 404),
    ("GET", "/v1/orders", 405), ("DELETE", "/v1/orders/INV-1", 405), ("HEAD", "/v1/orders/INV-1", 405),
    ("PUT", "/wallet/v1/balance", 405),
])
def test_a_path_or_method_the_document_does_not_define_is_refused_before_any_signature(
        api: Api, method: str, target: str, status: int) -> None:
    with pytest.raises((PathNotFound, OperationNotFound)):
        api.contract.validate_request(MockRequest(SERVER, method, target))
    before = api.snapshot()
    connection = http.client.HTTPConnection("127.0.0.1", api.http_port, timeout=10)
    try:
        connection.request(method, target)
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    assert answer.status == status
    if method != "HEAD":
        assert error_schema_fits(json.loads(body)) and json.loads(body)["error"]["code"] == "INVALID_REQUEST"
    if status == 405:
        assert answer.getheader("Allow")
    assert api.snapshot() == before


# ---- the wallet face ----


def test_the_wallet_app_pays_the_png_of_an_api_order(api: Api, tmp_path: Path) -> None:
    order = api.create("W-1", 12500)
    image = tmp_path / "order.png"
    image.write_bytes(base64.b64decode(order["qr_png"]))
    app = api.wallet_app("alice")
    paid = app.pay(scanned_payload(str(image)))
    assert (paid["status"], paid["response_code"], paid["order_no"], paid["amount"]) == (
        "paid", "00", order["order_no"], 12500)
    assert paid["balance"] == opening("alice") - 12500 == api.balance("alice") == app.balance()["balance"]
    now = api.send("GET", "/v1/orders/W-1").json()
    assert (now["status"], now["paid_amount"], now["channel"], now["wallet_txn_id"]) == (
        "paid", 12500, "wechat", paid["wallet_txn_id"])
    assert paid["wallet_txn_id"].startswith("4200" + api.clock().strftime("%Y%m%d"))
    row = next(t for t in api.snapshot()[2] if t.order_no == order["order_no"])
    assert (row.status, row.posted_amount, row.account_id) == ("approved", 12500, "wallet:alice")
    assert (row.channel, row.wallet_txn_id, row.order_no) == ("wechat", paid["wallet_txn_id"], order["order_no"])
    api.refused("ORDER_PAID", "POST", "/wallet/v1/payments", {"payload": order["payload"]}, caller="wallet:alice")


def static_code(amount: str | None = None, merchant: str = MID) -> str:
    """A merchant's printed code: point of initiation 11, the merchant in 26.01, the terminal in 62.07."""
    fields: dict[str, Any] = {"00": "01", "01": "11", "26": {"00": "com.possim.pay", "01": merchant}, "52": "9311",
                              "53": "156", "58": "CN", "59": "CITY NON-TAX REVENUE HALL", "60": "HUANGPU",
                              "62": {"07": TID}}
    if amount is not None:
        fields["54"] = amount
    return encode_mpm(fields)


def test_a_static_code_is_paid_with_the_amount_the_payer_types(api: Api) -> None:
    code = static_code()
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments", {"payload": code}, caller="wallet:alice",
                names="amount")
    paid = api.send("POST", "/wallet/v1/payments", {"payload": code, "amount": 4500}, caller="wallet:alice").json()
    assert (paid["status"], paid["amount"], paid["balance"]) == ("paid", 4500, opening("alice") - 4500)
    order = next(o for o in api.snapshot()[0] if o.order_no == paid["order_no"])
    assert (order.kind, order.terminal_id, order.merchant_id, order.status) == ("mpm_static", TID, MID, "paid")
    fixed = static_code("20.00")
    assert api.send("POST", "/wallet/v1/payments", {"payload": fixed}, caller="wallet:alice").json()["amount"] == 2000
    assert api.send("POST", "/wallet/v1/payments", {"payload": fixed, "amount": 2000},
                    caller="wallet:alice").json()["status"] == "paid"
    api.refused("ORDER_NOT_FOUND", "POST", "/wallet/v1/payments",
                {"payload": static_code(merchant="898310048169999"), "amount": 100}, caller="wallet:alice")
    assert api.balance("alice") == opening("alice") - 8500


def test_a_static_code_with_an_amount_refuses_another_amount(api: Api) -> None:
    api.refused("AMOUNT_MISMATCH", "POST", "/wallet/v1/payments", {"payload": static_code("20.00"), "amount": 2001},
                caller="wallet:alice")


def test_a_wrong_or_missing_password_is_refused_above_the_accounts_password_above(api: Api) -> None:
    big = api.create("PW-1", 30001)
    api.refused("WRONG_PASSWORD", "POST", "/wallet/v1/payments", {"payload": big["payload"]}, caller="wallet:alice")
    wrong = api.refused("WRONG_PASSWORD", "POST", "/wallet/v1/payments", {"payload": big["payload"], "password": "999999"},
                        caller="wallet:alice")
    assert "999999" not in wrong.answer.decode()
    assert api.pay(big, password="123456").json()["status"] == "paid"
    assert api.pay(api.create("PW-2", 30000)).json()["status"] == "paid"  # not above it: no password wanted
    assert api.balance("alice") == opening("alice") - 60001


@pytest.mark.parametrize("account, code", [("bob", "51"), ("dave", "62")])
def test_a_wallet_that_declines_answers_200_declined_and_nothing_moves(api: Api, account: str, code: str) -> None:
    order = api.create("DEC-1", 2000)
    before = api.snapshot()
    declined = api.pay(order, account)
    assert declined.status == 200
    assert declined.json() | {"reason": None} == {
        "wallet_txn_id": None, "order_no": order["order_no"], "status": "declined", "response_code": code,
        "reason": None, "amount": 2000, "currency": "156", "balance": opening(account)}
    assert declined.json()["reason"]
    static = api.send("POST", "/wallet/v1/payments", {"payload": static_code("50.00")}, caller=f"wallet:{account}").json()
    assert (static["status"], static["order_no"], static["amount"], static["response_code"]) == (
        "declined", None, 5000, code)
    assert api.snapshot() == before
    assert api.send("GET", "/v1/orders/DEC-1").json()["status"] == "created"


def test_each_face_knows_only_its_own_callers(api: Api) -> None:
    api.refused("UNKNOWN_PARTNER", "GET", "/wallet/v1/balance", caller=CITYHALL)
    api.refused("UNKNOWN_PARTNER", "POST", "/v1/orders", {"out_order_no": "F-1", "amount": 5}, caller="wallet:alice")
    # Refused as unknown before its timestamp is looked at, and without spending its nonce.
    nonce = new_nonce(random.Random(2))
    api.refused("UNKNOWN_PARTNER", "GET", "/v1/orders/F-1", caller="wallet:alice", nonce=nonce,
                at=api.clock() - timedelta(days=1))
    assert api.send("GET", "/wallet/v1/balance", caller="wallet:alice", nonce=nonce).status == 200
    api.refused("UNKNOWN_PARTNER", "GET", "/wallet/v1/balance", caller="wallet:alice",
                edit=replace("X-Possim-Partner", lambda _: "wallet:mallory"))
    balance = api.send("GET", "/wallet/v1/balance", caller="wallet:carol").json()
    assert balance == {"account": "carol", "currency": "156", "balance": opening("carol")}


def test_an_expired_order_cannot_be_paid_and_reads_closed(api: Api) -> None:
    order = api.create("EXP-1", 700, expires_in=60)
    api.clock.advance(timedelta(seconds=61))
    before = api.snapshot()
    late = api.pay(order)
    assert late.status == 409 and late.error["code"] in ("ORDER_EXPIRED", "ORDER_CLOSED")  # the sweep may come first
    after = api.snapshot()
    assert after[1] == before[1] and len(after[2]) == len(before[2])
    now = api.send("GET", "/v1/orders/EXP-1").json()
    assert now["status"] == "closed" and now["closed_at"] >= now["expires_at"]
    assert api.balance("alice") == opening("alice")


def test_what_a_wallet_cannot_pay_is_refused_naming_why(api: Api) -> None:
    order = api.create("BAD-1", 1500)
    wallet = {"caller": "wallet:alice"}
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments", {"payload": "hello"}, names="payload", **wallet)
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments", {"amount": 1500}, names="payload", fits=False, **wallet)
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments", {"payload": order["payload"], "password": "1" * 33},
                names="password", fits=False, **wallet)
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments", {"payload": order["payload"], "tip": 1}, names="tip",
                fits=False, **wallet)
    api.refused("AMOUNT_MISMATCH", "POST", "/wallet/v1/payments", {"payload": order["payload"], "amount": 1501}, **wallet)
    nowhere = dynamic_order_qr(merchant_account={"00": "com.possim.pay", "01": MID}, mcc="9311", currency="156",
                               amount_minor=1500, country="CN", name="CITY NON-TAX REVENUE HALL", city="HUANGPU",
                               reference="2606159999999999", terminal_label="WEB00001")
    api.refused("ORDER_NOT_FOUND", "POST", "/wallet/v1/payments", {"payload": nowhere}, **wallet)
    assert api.pay(order, amount=1500).json()["status"] == "paid"


def scan_at_the_counter(api: Api, account: str, amount: int) -> tuple[str, dict[str, str]]:
    """A POS signs on and scans the account's payment code over ISO 8583: its response code and QR data."""
    dialect = api.thread.core.dialect
    wallet = WALLETS.account(account)
    assert wallet is not None
    spec = dialect.transaction("qr_sale")
    sale = Message(spec.mti, {3: spec.processing_code, 4: f"{amount:012d}", 11: "000002", 12: "100000", 13: "0615",
                              25: spec.condition, 41: TID, 42: MID, 49: "156"})
    dialect.set_role(sale, "transaction_type", spec.type_code)
    dialect.set_role(sale, "batch_number", "000001")
    code = generate(wallet.provider, wallet.number, wallet.secret, api.clock())
    dialect.set_role(sale, "qr_data", encode_qr_data({"payment_code": code}))
    with TestTerminal(api.tcp_port, dialect) as pos:
        assert pos.exchange(sign_on(dialect, "000001"))[39] == "00"
        answer = pos.exchange(sale)
    return answer[39], decode_qr_data(dialect.get_role(answer, "qr_data") or "")


def test_a_scanned_payment_waits_for_the_password_is_listed_and_confirmed_once(api: Api) -> None:
    code, data = scan_at_the_counter(api, "alice", 40000)
    assert code == "09" and data["status"] == "paying"
    waiting = api.send("GET", "/wallet/v1/payments", caller="wallet:alice").json()["payments"]
    assert [(p["status"], p["response_code"], p["amount"], p["order_no"]) for p in waiting] == [
        ("paying", "09", 40000, data["order_no"])]
    txn_id = waiting[0]["wallet_txn_id"]
    assert api.send("GET", "/wallet/v1/payments", caller="wallet:bob").json() == {"payments": []}
    confirm = f"/wallet/v1/payments/{txn_id}/confirm"
    api.refused("PAYMENT_NOT_FOUND", "POST", confirm, {"password": "654321"}, caller="wallet:bob")
    api.refused("PAYMENT_NOT_FOUND", "POST", "/wallet/v1/payments/4200000000/confirm", {"password": "123456"},
                caller="wallet:alice")
    api.refused("INVALID_REQUEST", "POST", "/wallet/v1/payments/4200.0/confirm", {"password": "123456"},
                caller="wallet:alice", names="wallet_txn_id", fits=False)
    api.refused("INVALID_REQUEST", "POST", confirm, {}, caller="wallet:alice", names="password", fits=False)
    api.refused("WRONG_PASSWORD", "POST", confirm, {"password": "000000"}, caller="wallet:alice")
    paid = api.send("POST", confirm, {"password": "123456"}, caller="wallet:alice").json()
    assert (paid["status"], paid["response_code"], paid["wallet_txn_id"]) == ("paid", "00", txn_id)
    assert paid["balance"] == opening("alice") - 40000
    again = api.send("POST", confirm, {"password": "123456"}, caller="wallet:alice").json()
    assert again == paid
    assert api.send("GET", "/wallet/v1/payments", caller="wallet:alice").json() == {"payments": []}
    assert api.balance("alice") == opening("alice") - 40000


def test_a_confirmation_the_wallet_declines_keeps_the_payment_waiting(api: Api) -> None:
    code, data = scan_at_the_counter(api, "carol", 500000)  # carol always wants her password; she holds 8,000.00
    assert code == "09"
    txn_id = api.send("GET", "/wallet/v1/payments", caller="wallet:carol").json()["payments"][0]["wallet_txn_id"]
    spent = api.pay(api.create("CAR-1", 400000), "carol", password="111111").json()
    assert spent["status"] == "paid" and spent["balance"] == 400000
    before = api.snapshot()
    declined = api.send("POST", f"/wallet/v1/payments/{txn_id}/confirm", {"password": "111111"}, caller="wallet:carol")
    assert declined.status == 200
    assert {k: declined.json()[k] for k in ("status", "response_code", "wallet_txn_id", "order_no", "amount")} == {
        "status": "declined", "response_code": "51", "wallet_txn_id": txn_id, "order_no": data["order_no"], "amount": 500000}
    assert api.snapshot() == before
    assert len(api.send("GET", "/wallet/v1/payments", caller="wallet:carol").json()["payments"]) == 1
