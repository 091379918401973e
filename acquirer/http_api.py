"""The host's HTTP front: the open-platform order API for partners, and the wallet network's entry for wallet apps.

A thin adapter, as the TCP front is: it checks the signature, reads the
JSON, asks the order service (acquirer/qr_orders.py) and commits what it
changed before answering. It runs in the host's event loop, so its journal
writes never interleave with a terminal's. The contract is docs/openapi.yaml;
every refusal is `{"error": {"code", "message"}}` with a stable code, and
changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from datetime import timedelta
from typing import Any, Awaitable, Callable

from aiohttp import web

from possim.wire import money
from possim.wire.api_signature import SignatureError, Verifier
from possim.wire.emv_qr import decode_mpm
from possim.wire.qr_image import qr_png

from .core import HostCore
from .journal import Order, QrRefund, Unit
from .partners import Partner, Partners
from .qr_orders import Change, QrRefusal, RowKey, order_json
from .wallets import WalletAccount

log = logging.getLogger("possim.host")

WALLET_PREFIX = "wallet:"
_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
_WALLET_TXN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_URL = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#][!-~]*)?\Z")
"""An absolute http(s) URL in visible ASCII: its path and query are what a notification signs."""
MAX_AMOUNT = 999_999_999_999
"""The 12 digits of ISO 8583 field 4."""
_STATUS = {
    "MISSING_HEADER": 400, "INVALID_REQUEST": 400, "BAD_SIGNATURE": 401, "UNKNOWN_PARTNER": 401, "STALE_TIMESTAMP": 401,
    "ORDER_NOT_FOUND": 404, "REFUND_NOT_FOUND": 404, "PAYMENT_NOT_FOUND": 404, "INTERNAL_ERROR": 500,
}
"""HTTP status per error code; every other code is a conflict with the order's state (409)."""
Handler = Callable[[web.Request, str, dict[str, Any]], Awaitable[web.Response]]


class ApiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class OrderApi:
    def __init__(self, core: HostCore, partners: Partners):
        self.core = core
        self.partners = partners
        self._verifiers = {"partner": Verifier(partners.key, core.clock), "wallet": Verifier(self._wallet_key, core.clock)}
        """One per face: a key of the other face is an unknown partner, refused before its nonce is spent."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[_json_errors])
        route, add = self._signed, app.router.add_route
        add("POST", "/v1/orders", route(self.create_order, "partner"))
        add("GET", "/v1/orders/{out_order_no}", route(self.get_order, "partner"))
        add("GET", "/v1/orders/{out_order_no}/qr.png", route(self.get_qr_png, "partner"))
        add("POST", "/v1/orders/{out_order_no}/close", route(self.close_order, "partner"))
        add("POST", "/v1/orders/{out_order_no}/refunds", route(self.create_refund, "partner"))
        add("GET", "/v1/orders/{out_order_no}/refunds/{out_refund_no}", route(self.get_refund, "partner"))
        add("POST", "/wallet/v1/payments", route(self.wallet_pay, "wallet"))
        add("POST", "/wallet/v1/payments/{wallet_txn_id}/confirm", route(self.wallet_confirm, "wallet"))
        add("GET", "/wallet/v1/payments", route(self.wallet_payments, "wallet"))
        add("GET", "/wallet/v1/balance", route(self.wallet_balance, "wallet"))
        return app

    # ---- signature and errors, around every handler ----

    def _wallet_key(self, caller: str) -> bytes | None:
        if not caller.startswith(WALLET_PREFIX):
            return None
        account = self.core.orders.wallets.account(caller[len(WALLET_PREFIX):])
        return account.secret if account is not None else None

    def _signed(self, handler: Handler, face: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        verifier = self._verifiers[face]

        async def signed(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                # The target as sent on the request line: what the client signed, not aiohttp's decoded path.
                caller = verifier.verify(request.method, request.raw_path, body, request.headers)
                return await handler(request, caller, _json_body(body, request))
            except web.HTTPException:
                raise
            except SignatureError as exc:
                return _error(exc.code, exc.message)
            except ApiError as exc:
                return _error(exc.code, str(exc))
            except QrRefusal as exc:
                return _error(exc.code, str(exc))
            except Exception as exc:  # one bad request never stops the host
                log.exception("HTTP %s %s failed: %s", request.method, request.path, type(exc).__name__)
                return _error("INTERNAL_ERROR", "the host failed to handle the request; nothing was changed")
        return signed

    # ---- partner API ----

    async def create_order(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        partner = self._partner(caller)
        _only(body, "out_order_no", "amount", "currency", "description", "notify_url", "expires_in", "merchant_id")
        out_order_no = _reference(body, "out_order_no")
        amount = _amount(body, "amount")
        currency = _currency(body.get("currency", "156"))
        description = _text(body, "description", 128)
        notify_url = _url(body.get("notify_url"))
        expires_in = body.get("expires_in", int(self.core.orders.settings.order_expiry.total_seconds()))
        if "expires_in" in body and (not _is_int(expires_in) or not 60 <= expires_in <= 86400):
            raise ApiError("INVALID_REQUEST", "expires_in: whole seconds from 60 to 86400")
        merchant_id = body.get("merchant_id", partner.merchant_id)
        if merchant_id != partner.merchant_id:
            raise ApiError("INVALID_REQUEST", f"merchant_id: partner {partner.id} sells for {partner.merchant_id} only")
        request_hash = hashlib.sha256(json.dumps(
            [out_order_no, amount, currency, description, notify_url, expires_in, merchant_id]).encode()).hexdigest()
        existing = self.core.journal.partner_order(partner.id, out_order_no)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise ApiError("OUT_ORDER_NO_REUSED", f"out_order_no {out_order_no} was used for another order")
            return _json(_with_png(existing), 200)
        merchant = self.core.registry.merchant(merchant_id)
        if merchant is None:
            raise ApiError("INVALID_REQUEST", f"merchant_id: {merchant_id} is not a merchant of this host")
        if currency != merchant.currency:
            raise ApiError("CURRENCY_MISMATCH", f"currency {currency} is not merchant {merchant.id}'s currency {merchant.currency}")
        now = self.core.clock()
        key = RowKey(partner.terminal_id, None, f"{now.month:02d}{now.day:02d}", self.core.calendar.date_of(now))
        change = self.core.orders.create(
            merchant=merchant, amount=amount, currency=currency, now=now, key=key, terminal_id=partner.terminal_id,
            partner=partner, out_order_no=out_order_no, notify_url=notify_url, description=description,
            expires_in=timedelta(seconds=expires_in), request_hash=request_hash,
        )
        self._commit(change)
        created = _json(_with_png(change.order), 201)
        created.headers["Location"] = f"/v1/orders/{out_order_no}"
        return created

    async def get_order(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        self.core.orders.close_expired(self.core.clock())
        return _json(order_json(self._order(caller, request)))

    async def get_qr_png(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        order = self._order(caller, request)
        if order.payload is None:
            raise ApiError("ORDER_NOT_FOUND", f"order {order.order_no} has no code to show")
        return web.Response(body=qr_png(order.payload), content_type="image/png")

    async def close_order(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        _only(body)
        order = self._order(caller, request)
        change = self.core.orders.close(order, self.core.clock())
        self._commit(change)
        return _json(order_json(change.order))

    async def create_refund(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        _only(body, "out_refund_no", "amount", "reason")
        order = self._order(caller, request)
        out_refund_no = _reference(body, "out_refund_no")
        amount = _amount(body, "amount")
        _text(body, "reason", 128)
        existing = self.core.journal.refund(order.order_no, out_refund_no)
        if existing is not None:
            if existing.amount != amount:
                raise ApiError("AMOUNT_MISMATCH", f"refund {out_refund_no} was for {existing.amount}, not {amount}")
            return _json(_refund_json(existing, order), 200)
        now = self.core.clock()
        key = self.core.orders.host_key(order, now, suffix=f"/{out_refund_no}")
        change = self.core.orders.refund(order, amount=amount, out_refund_no=out_refund_no, now=now, key=key)
        self._commit(change)
        return _json(_refund_json(change.refunds[0], change.order), 201)

    async def get_refund(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        order = self._order(caller, request)
        out_refund_no = _path_part(request, "out_refund_no", _REFERENCE)
        refund = self.core.journal.refund(order.order_no, out_refund_no)
        if refund is None:
            raise ApiError("REFUND_NOT_FOUND", f"order {order.out_order_no} has no refund {out_refund_no}")
        return _json(_refund_json(refund, order))

    # ---- wallet face ----

    async def wallet_pay(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        account = self._wallet(caller)
        _only(body, "payload", "amount", "password")
        payload = body.get("payload")
        if not isinstance(payload, str) or not 1 <= len(payload) <= 512:
            raise ApiError("INVALID_REQUEST", "payload: the scanned code's text, 1 to 512 characters (required)")
        amount = _amount(body, "amount") if "amount" in body else None
        password = _text(body, "password", 32)
        core = self.core
        try:
            change = core.orders.pay(payload=payload, account=account, now=core.clock(), amount=amount, password=password,
                                     merchant=core.registry.merchant)
        except QrRefusal as refusal:
            if refusal.code != "WALLET_DECLINED":
                raise
            return _json(self._declined_json(refusal, account, *self._scanned(payload, amount)))
        self._commit(change)
        core.fees.wallet_paid(change.order.transaction_id if change.order else None)
        return _json(self._payment_json(change.order, account))

    async def wallet_confirm(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        account = self._wallet(caller)
        _only(body, "password")
        wallet_txn_id = _path_part(request, "wallet_txn_id", _WALLET_TXN_ID)
        password = _text(body, "password", 32)
        if password is None:
            raise ApiError("INVALID_REQUEST", "password: required")
        self.core.orders.close_expired(self.core.clock())
        try:
            change = self.core.orders.confirm(wallet_txn_id=wallet_txn_id, account=account, password=password,
                                              now=self.core.clock())
        except QrRefusal as refusal:
            if refusal.code != "WALLET_DECLINED":
                raise
            order = self.core.journal.order_by_wallet_txn(wallet_txn_id)
            assert order is not None  # the service found it before the wallet declined
            return _json(self._declined_json(refusal, account, order.order_no, order.amount, order.currency,
                                             order.wallet_txn_id))
        self._commit(change)
        self.core.fees.wallet_paid(change.order.transaction_id if change.order else None)
        return _json(self._payment_json(change.order, account))

    async def wallet_payments(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        """The account's payments waiting for its password: what a wallet app shows on opening."""
        account = self._wallet(caller)
        self.core.orders.close_expired(self.core.clock())
        waiting = [o for o in self.core.journal.orders() if o.wallet_account == account.name and o.status == "paying"]
        return _json({"payments": [self._payment_json(o, account) for o in waiting]})

    async def wallet_balance(self, request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
        account = self._wallet(caller)
        balance = self.core.journal.balance(account.journal_account_id) or 0
        return _json({"account": account.name, "currency": account.currency, "balance": balance})

    # ---- helpers ----

    def _partner(self, caller: str) -> Partner:
        partner = self.partners.get(caller)
        if partner is None:
            raise ApiError("UNKNOWN_PARTNER", f"no partner {caller}")
        return partner

    def _wallet(self, caller: str) -> WalletAccount:
        account = self.core.orders.wallets.account(caller[len(WALLET_PREFIX):])
        if account is None:
            raise ApiError("UNKNOWN_PARTNER", f"no wallet account {caller}")
        return account

    def _order(self, caller: str, request: web.Request) -> Order:
        out_order_no = _path_part(request, "out_order_no", _REFERENCE)
        order = self.core.journal.partner_order(self._partner(caller).id, out_order_no)
        if order is None:
            raise ApiError("ORDER_NOT_FOUND", f"no order {out_order_no} of partner {caller}")
        return order

    def _payment_json(self, order: Order, account: WalletAccount) -> dict[str, Any]:
        status = {"paid": "paid", "refunded": "paid", "paying": "paying"}.get(order.status, "declined")
        reason = {"paid": None, "paying": "waiting for the wallet password"}.get(status, f"the order is {order.status}")
        return {
            "wallet_txn_id": order.wallet_txn_id, "order_no": order.order_no, "status": status,
            "response_code": {"paid": "00", "paying": "09"}.get(status, "05"), "reason": reason,
            "amount": order.amount, "currency": order.currency,
            "balance": self.core.journal.balance(account.journal_account_id) or 0,
        }

    def _declined_json(self, refusal: QrRefusal, account: WalletAccount, order_no: str | None, amount: int,
                       currency: str, wallet_txn_id: str | None = None) -> dict[str, Any]:
        """A payment the wallet itself refused (balance, currency, frozen): an answer, not an API error."""
        return {"wallet_txn_id": wallet_txn_id, "order_no": order_no, "status": "declined",
                "response_code": refusal.iso, "reason": str(refusal), "amount": amount, "currency": currency,
                "balance": self.core.journal.balance(account.journal_account_id) or 0}

    def _scanned(self, payload: str, amount: int | None) -> tuple[str | None, int, str]:
        """What a declined code asked to pay: (order_no, amount, currency) of the order a dynamic code names,
        or the static code's amount (or the payer's) and currency — no order is made for a declined static code.

        Called only after the order service accepted the code, so what it names exists.
        """
        fields = decode_mpm(payload).fields
        extra = fields.get("62") if isinstance(fields.get("62"), dict) else {}
        order = self.core.journal.order(extra.get("05", "")) if fields.get("01") != "11" else None
        if order is not None:
            return order.order_no, order.amount, order.currency
        currency = money.currency(str(fields.get("53", "156")))
        return None, amount if amount is not None else money.parse_major(fields["54"], currency), currency.numeric

    def _commit(self, change: Change) -> None:
        self.core.journal.record(Unit(at=self.core.clock().isoformat(timespec="milliseconds"), **change.unit_parts()))


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, wrong method, body too large) in the API's error format."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no endpoint {request.path}", 405: f"{request.method} is not allowed on {request.path}",
                   413: "the body is larger than 64 KiB"}.get(exc.status, exc.reason)
        response = _error("INVALID_REQUEST", message)
        response.set_status(exc.status if exc.status in (404, 405) else 400)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def _with_png(order: Order) -> dict[str, Any]:
    shown = order_json(order)
    if order.payload:
        shown["qr_png"] = base64.b64encode(qr_png(order.payload)).decode("ascii")
    return shown


def _refund_json(refund: QrRefund, order: Order) -> dict[str, Any]:
    return {"out_refund_no": refund.out_refund_no, "order_no": refund.order_no, "amount": refund.amount,
            "currency": refund.currency, "status": "succeeded", "refunded_total": order.refunded_amount,
            "created_at": refund.created_at}


def _json_body(body: bytes, request: web.Request) -> dict[str, Any]:
    if not body:
        return {}
    if request.content_type != "application/json" or (request.charset or "utf-8").lower() != "utf-8":
        sent = request.headers.get("Content-Type") or "untyped"
        raise ApiError("INVALID_REQUEST", f"a body must be sent as application/json in UTF-8, not {sent}")
    try:
        # Decoded here: json.loads would take UTF-16 and UTF-32 bytes too.
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_no_repeats, parse_float=_no_float)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ApiError("INVALID_REQUEST", f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError("INVALID_REQUEST", "body must be a JSON object")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ApiError("INVALID_REQUEST", f"{key}: given twice")
        seen[key] = value
    return seen


def _no_float(text: str) -> float:
    raise ApiError("INVALID_REQUEST", f"{text} is not a whole number: amounts are integers of minor units")


def _only(body: dict[str, Any], *allowed: str) -> None:
    """No unknown member, and no null: a member of a request is given with its value or left out."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError("INVALID_REQUEST", f"{unknown[0]}: not a member of this request (allowed: {', '.join(allowed)})")
    for key, value in body.items():
        if value is None:
            raise ApiError("INVALID_REQUEST", f"{key}: null is not a value; leave the member out")


def _path_part(request: web.Request, name: str, pattern: re.Pattern[str]) -> str:
    value = request.match_info[name]
    if not pattern.match(value):
        raise ApiError("INVALID_REQUEST",
                       f"{name} in the path: only letters, digits, '_' and '-', as many as docs/openapi.yaml allows")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reference(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not _REFERENCE.match(value):
        raise ApiError("INVALID_REQUEST", f"{key}: 1 to 32 letters, digits, '_' or '-' (required)")
    return value


def _amount(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not _is_int(value) or not 1 <= value <= MAX_AMOUNT:
        raise ApiError("INVALID_REQUEST", f"{key}: a whole number of minor units from 1 to {MAX_AMOUNT} (required)")
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{3}", value):
        raise ApiError("INVALID_REQUEST", "currency: an ISO 4217 numeric code such as \"156\"")
    try:
        return money.currency(value).numeric
    except ValueError:
        raise ApiError("INVALID_REQUEST", f"currency: {value} is not an ISO 4217 currency") from None


def _text(body: dict[str, Any], key: str, longest: int) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > longest):
        raise ApiError("INVALID_REQUEST", f"{key}: text of at most {longest} characters")
    return value


def _url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 512 or not _URL.match(value):
        raise ApiError("INVALID_REQUEST", "notify_url: an http:// or https:// URL of at most 512 visible ASCII characters")
    return value


def _error(code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, _STATUS.get(code, 409))


def _json(value: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, separators=(",", ":")))


class HttpFront:
    """The order API on a TCP port of the running event loop (the host's own)."""

    def __init__(self, api: OrderApi):
        self._api = api
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._runner = web.AppRunner(self._api.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        bound = server.sockets[0].getsockname() if server is not None and server.sockets else (host, port)
        self.address = (bound[0], bound[1])
        log.info("order API listening on http://%s:%d", *self.address)
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
