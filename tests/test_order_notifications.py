"""Signed notifications to partners (docs/openapi.yaml, the orderEvent webhook), delivered to a real aiohttp
server standing in for the partner's notify_url on 127.0.0.1: it checks every attempt's signature with
wire.api_signature.Verifier under the partner's key and its body against the document, and answers as a
test scripts it — an error status, a wrong body, a body that is not UTF-8, a redirect, silence past the
timeout — before acknowledging. The host's back-off comes from a host.yaml of whole seconds; its clock is a
SteppingClock the test moves on by exactly each wait, so the back-off is read from the journal, not timed.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.testing import MockResponse
from werkzeug.datastructures import Headers

from host_support import host_clock
from possim.acquirer.core import build_host
from possim.acquirer.journal import Journal, Notification
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostThread
from possim.acquirer.wallets import WalletNetwork
from possim.wire.api_signature import SignatureError, Verifier
from possim.wire.clock import SteppingClock
from possim.wire.server_thread import ServerThread
from possim.wire.signed_http import SignedClient

CONTRACT = OpenAPI.from_file_path(str(Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"))
PARTNERS = Partners.from_fixtures()
CITYHALL = "cityhall-web"
BACKOFF = [1, 1, 2]
MAX_ATTEMPTS = 6
ACK = {"code": "SUCCESS"}
ALICE = WalletNetwork.from_fixtures().account("alice")


@dataclass(frozen=True)
class Attempt:
    """One notification request as the partner received it."""

    path: str
    body: bytes
    headers: dict[str, str]
    verified: str
    """The partner ID the signature proved, or the verifier's error code."""

    @property
    def notification(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass(frozen=True)
class WebhookCall:
    """A received notification as openapi-core's WebhookRequest protocol reads it."""

    name: str
    method: str
    body: bytes
    content_type: str
    parameters: RequestParameters


class PartnerServer:
    """The partner's notify_url: verifies, records, and answers each attempt as `script` says, then acknowledges."""

    def __init__(self, clock: SteppingClock, script: list[str]):
        self._verifier = Verifier(lambda partner: PARTNERS.key(partner) if partner == CITYHALL else None, clock)
        self._script = list(script)
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.port = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()
        app.router.add_post("/possim/notify", self._receive)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]
        return host, self.port

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped.set()

    def url(self, query: str = "?shop=7") -> str:
        return f"http://127.0.0.1:{self.port}/possim/notify{query}"

    def received(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            verified = self._verifier.verify(request.method, request.raw_path, body, request.headers)
        except SignatureError as refused:
            verified = refused.code
        with self._lock:
            self.attempts.append(Attempt(request.raw_path, body, dict(request.headers), verified))
            behaviour = self._script.pop(0) if self._script else "ack"
        if behaviour == "error":
            return web.json_response({"code": "FAIL"}, status=500)
        if behaviour == "wrong-body":
            return web.json_response({"code": "success"})
        if behaviour == "not-utf8":
            return web.Response(body=b'{"code": "\xff"}', content_type="application/json")
        if behaviour == "redirect":
            raise web.HTTPFound("/elsewhere")
        if behaviour == "silence":
            await asyncio.sleep(2.5)  # past notify_timeout_seconds (1)
        return web.json_response(ACK)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        """Where the redirect points: a host that followed it would be acknowledged here, and recorded."""
        with self._lock:
            self.attempts.append(Attempt(request.raw_path, await request.read(), dict(request.headers), "redirected"))
        return web.json_response(ACK)


@dataclass
class Host:
    clock: SteppingClock
    db_path: Path
    fixtures: Path
    thread: HostThread | None = None
    base_url: str = ""
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    def start(self) -> None:
        core = build_host("cup", self.db_path, self.fixtures, clock=self.clock)
        self.thread = HostThread(core, http=("127.0.0.1", 0), partners=PARTNERS)
        self.thread.start()
        assert self.thread.http_address is not None
        self.base_url = "http://127.0.0.1:%d" % self.thread.http_address[1]

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread.core.close()
            self.thread = None

    def client(self) -> SignedClient:
        key = PARTNERS.key(CITYHALL)
        assert key is not None
        return SignedClient(self.base_url, CITYHALL, key, self.clock, self.rng)

    def order(self, out_order_no: str, amount: int, **extra: Any) -> dict[str, Any]:
        answer = self.client().post("/v1/orders", {"out_order_no": out_order_no, "amount": amount, **extra})
        assert answer.status == 201, answer.body
        return answer.json()

    def pay(self, order: dict[str, Any]) -> None:
        assert ALICE is not None
        wallet = SignedClient(self.base_url, "wallet:alice", ALICE.secret, self.clock, self.rng)
        answer = wallet.post("/wallet/v1/payments", {"payload": order["payload"]})
        assert answer.status == 200 and answer.json()["status"] == "paid", answer.body

    def notifications(self) -> list[Notification]:
        journal = Journal(self.db_path)
        try:
            return journal.notifications()
        finally:
            journal.close()

    def wait_for(self, what: str, done: Callable[[list[Notification]], bool], deadline: float = 15.0) -> list[Notification]:
        """The journal's notifications once `done` holds of them; fails naming `what` if that never comes."""
        end = time.monotonic() + deadline
        while True:
            notifications = self.notifications()
            if done(notifications):
                return notifications
            if time.monotonic() > end:
                pytest.fail(f"never {what}: {notifications}")
            time.sleep(0.05)


def fixtures_with(folder: Path, **qr: Any) -> Path:
    """A fixtures folder holding only a host.yaml: every other file falls back to the shipped one."""
    folder.mkdir()
    (folder / "host.yaml").write_text(yaml.safe_dump({"qr": qr}), encoding="utf-8")
    return folder


@pytest.fixture
def clock() -> SteppingClock:
    return host_clock()


@pytest.fixture
def host(tmp_path: Path, clock: SteppingClock) -> Iterator[Host]:
    folder = fixtures_with(tmp_path / "fixtures", notify_backoff_seconds=BACKOFF, notify_max_attempts=MAX_ATTEMPTS,
                           notify_timeout_seconds=1)
    running = Host(clock, tmp_path / "journal.sqlite", folder)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def partner(clock: SteppingClock, script: list[str] | None = None) -> Iterator[PartnerServer]:
    server = PartnerServer(clock, script or [])
    thread = ServerThread(lambda: server, "partner-notify-url")
    thread.start()
    try:
        yield server
    finally:
        thread.stop()


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wait(attempts: int) -> timedelta:
    """The back-off after the `attempts`-th failed attempt: host.yaml's list, its last value repeating."""
    return timedelta(seconds=BACKOFF[min(attempts, len(BACKOFF)) - 1])


def check_against_the_document(attempt: Attempt) -> None:
    call = WebhookCall("orderEvent", "post", attempt.body, attempt.headers["Content-Type"],
                       RequestParameters(header=Headers(attempt.headers)))
    CONTRACT.validate_webhook_request(call)
    CONTRACT.validate_webhook_response(call, MockResponse(json.dumps(ACK).encode()))


def follow_retries(host: Host, clock: SteppingClock, failures: int) -> list[str]:
    """Let `failures` attempts of the one notification fail in turn, checking each recorded wait and moving the
    clock on by it; returns why each failed, as the journal recorded it."""
    errors = []
    for attempt in range(1, failures + 1):
        (notification,) = host.wait_for(f"attempt {attempt} recorded", lambda n: n and n[0].attempts == attempt)
        assert notification.last_error
        errors.append(notification.last_error)
        if attempt < MAX_ATTEMPTS:
            assert notification.state == "pending"
            assert stamp(notification.next_at) - stamp(notification.updated_at) == wait(attempt)
            clock.advance(wait(attempt))
    return errors


def test_a_notification_is_retried_on_the_back_off_with_the_same_id_until_acknowledged(host: Host, clock) -> None:
    script = ["error", "wrong-body", "not-utf8", "redirect", "silence"]
    with partner(clock, script) as shop:
        order = host.order("N-1", 1250, notify_url=shop.url())
        host.pay(order)
        errors = follow_retries(host, clock, len(script))
        (delivered,) = host.wait_for("delivered", lambda n: n[0].state == "delivered")
        attempts = shop.received()
    assert (delivered.attempts, delivered.event, delivered.partner_id) == (len(script) + 1, "order.paid", CITYHALL)
    assert [e.split(" (")[0] for e in errors] == ["HTTP 500", 'answer is not {"code": "SUCCESS"}',
                                                  'answer is not {"code": "SUCCESS"}', "HTTP 302", "TimeoutError"]
    assert len(attempts) == len(script) + 1  # the redirect was not followed
    assert {a.verified for a in attempts} == {CITYHALL}
    assert {a.path for a in attempts} == {"/possim/notify?shop=7"}
    assert {a.body for a in attempts} == {delivered.body.encode()}
    assert len({a.headers["X-Possim-Nonce"] for a in attempts}) == len(attempts)  # signed afresh every time
    sent = attempts[0].notification
    assert sent["notify_id"] == delivered.notify_id and sent["event"] == "order.paid"
    assert (sent["order"]["order_no"], sent["order"]["status"], sent["order"]["paid_amount"]) == (order["order_no"], "paid", 1250)
    check_against_the_document(attempts[0])


def test_a_notification_nobody_acknowledges_is_failed_after_the_last_attempt(host: Host, clock) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every attempt is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host.pay(host.order("N-2", 300, notify_url=f"http://127.0.0.1:{port}/notify"))
    errors = follow_retries(host, clock, MAX_ATTEMPTS)
    assert all(e.startswith("ClientConnectorError") for e in errors), errors
    (failed,) = host.notifications()
    assert (failed.state, failed.attempts) == ("failed", MAX_ATTEMPTS)
    clock.advance(timedelta(hours=1))
    time.sleep(1.2)  # two ticks of the timers: a failed notification is never sent again
    assert [(n.state, n.attempts) for n in host.notifications()] == [("failed", MAX_ATTEMPTS)]


def test_every_change_of_a_partners_order_is_notified(host: Host, clock) -> None:
    with partner(clock) as shop:
        paid = host.order("E-1", 1000, notify_url=shop.url(""))
        host.pay(paid)
        for number, amount in (("R-1", 400), ("R-2", 600)):
            assert host.client().post("/v1/orders/E-1/refunds", {"out_refund_no": number, "amount": amount}).status == 201
        closed = host.order("E-2", 500, notify_url=shop.url(""))
        assert host.client().post("/v1/orders/E-2/close").status == 200
        expired = host.order("E-3", 700, notify_url=shop.url(""), expires_in=60)
        host.pay(host.order("E-4", 800))  # no notify_url: nothing is owed
        clock.advance(timedelta(seconds=61))
        notifications = host.wait_for("all delivered", lambda n: len(n) == 5 and all(x.state == "delivered" for x in n))
        received = shop.received()
    assert all(n.attempts == 1 for n in notifications)
    assert {a.verified for a in received} == {CITYHALL} and len(received) == 5
    events = sorted((a.notification["order"]["out_order_no"], a.notification["event"], a.notification["order"]["status"],
                     a.notification["order"]["refunded_amount"]) for a in received)
    assert events == [("E-1", "order.paid", "paid", 0), ("E-1", "order.refunded", "paid", 400),
                      ("E-1", "order.refunded", "refunded", 1000), ("E-2", "order.closed", "closed", 0),
                      ("E-3", "order.closed", "closed", 0)]
    assert {a.notification["notify_id"] for a in received} == {n.notify_id for n in notifications}
    assert [a.path for a in received] == ["/possim/notify"] * 5
    for attempt in received:
        check_against_the_document(attempt)
    orders = {a.notification["order"]["out_order_no"]: a.notification["order"] for a in received}
    assert orders["E-2"]["order_no"] == closed["order_no"] and orders["E-3"]["order_no"] == expired["order_no"]
    assert orders["E-3"]["closed_at"] >= orders["E-3"]["expires_at"] and paid["order_no"] == orders["E-1"]["order_no"]


def test_a_restarted_host_resumes_a_pending_notification(host: Host, clock) -> None:
    with partner(clock, ["error"]) as shop:
        host.pay(host.order("N-3", 1500, notify_url=shop.url()))
        (first,) = host.wait_for("the first attempt recorded", lambda n: n and n[0].attempts == 1)
        host.stop()
        clock.advance(wait(1))
        host.start()
        (delivered,) = host.wait_for("delivered after the restart", lambda n: n[0].state == "delivered")
        attempts = shop.received()
    assert (first.state, delivered.attempts, delivered.notify_id) == ("pending", 2, first.notify_id)
    assert len(attempts) == 2 and attempts[0].body == attempts[1].body == first.body.encode()
    assert {a.verified for a in attempts} == {CITYHALL}
