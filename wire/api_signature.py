"""HMAC-SHA256 request signing for the open-platform HTTP API.

One scheme for every signed HTTP exchange: partners' order requests, wallet
apps' requests (partner `wallet:<account>`, keyed by the account's secret)
and the host's notifications to partners (keyed by the partner's key). Four
headers travel with the request:

    X-Possim-Partner    partner id (1-128 visible ASCII characters)
    X-Possim-Timestamp  unix seconds, digits only
    X-Possim-Nonce      16-64 characters of [A-Za-z0-9_-], never reused
    X-Possim-Signature  64 lower-case hex: HMAC-SHA256(key, canonical)

    canonical = METHOD "\\n" path["?" query] "\\n" timestamp "\\n" nonce "\\n" sha256-hex(body)

The path is the request target exactly as sent (not decoded, query not
reordered); the body hash is over the raw bytes, of b"" when there is none.
The partner id is not in the canonical string: the key it selects binds it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import random
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

PARTNER_HEADER = "X-Possim-Partner"
TIMESTAMP_HEADER = "X-Possim-Timestamp"
NONCE_HEADER = "X-Possim-Nonce"
SIGNATURE_HEADER = "X-Possim-Signature"
HEADERS = (PARTNER_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
"""In the order the verifier reports a missing one."""

DEFAULT_WINDOW = 300
"""Seconds a timestamp may differ from the verifier's clock, either way."""

ErrorCode = Literal["MISSING_HEADER", "UNKNOWN_PARTNER", "STALE_TIMESTAMP", "BAD_SIGNATURE", "REPLAYED_REQUEST"]

_NONCE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_NONCE_LENGTH = 32
_FORMATS = {
    PARTNER_HEADER: (re.compile(r"[!-~]{1,128}\Z"), "1 to 128 visible ASCII characters"),
    # Capped so a huge digit string cannot reach int(); 12 digits reach year 33658.
    TIMESTAMP_HEADER: (re.compile(r"[0-9]{1,12}\Z"), "unix seconds, 1 to 12 digits"),
    NONCE_HEADER: (re.compile(r"[A-Za-z0-9_-]{16,64}\Z"), "16 to 64 characters of A-Z a-z 0-9 _ -"),
    SIGNATURE_HEADER: (re.compile(r"[0-9a-f]{64}\Z"), "64 lower-case hex digits"),
}
_METHOD = re.compile(r"[A-Za-z]+\Z")
_PATH = re.compile(r"/[!-~]*\Z")


class SignatureError(Exception):
    """A request the verifier refuses; `code` is the API error code, `message` says why.

    The message names headers but never quotes a key or a signature.
    """

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def canonical_request(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The string that is signed; published so other languages can be checked against it."""
    return "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])


def _signature(key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    canonical = canonical_request(method, path, timestamp, nonce, body)
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def _unix_seconds(at: datetime) -> int:
    """Whole seconds; a naive datetime is local time, as wire.clock's clocks give it."""
    return math.floor(at.timestamp())


def sign(key: bytes, method: str, path: str, body: bytes, partner: str, at: datetime, nonce: str) -> dict[str, str]:
    """The four headers for a request sent at `at`; refuses arguments the verifier would refuse."""
    if not key:
        raise ValueError("key must not be empty")
    if not _METHOD.match(method):
        raise ValueError("method must be letters only")
    if not _PATH.match(path):
        raise ValueError("path must start with '/' and hold only visible ASCII (percent-encode the rest)")
    timestamp = str(_unix_seconds(at))
    headers = {PARTNER_HEADER: partner, TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce}
    for name, value in headers.items():
        pattern, expected = _FORMATS[name]
        if not pattern.match(value):
            raise ValueError(f"{name} must be {expected}")
    headers[SIGNATURE_HEADER] = _signature(key, method, path, timestamp, nonce, body)
    return headers


def new_nonce(rng: random.Random) -> str:
    """32 characters of [A-Za-z0-9_-] (192 bits); pass random.SystemRandom() outside tests."""
    return "".join(rng.choice(_NONCE_ALPHABET) for _ in range(_NONCE_LENGTH))


class Verifier:
    """Checks signed requests and remembers their nonces; safe to share between threads.

    A nonce is remembered until its request's own timestamp leaves the
    window: from then on the timestamp check refuses any replay of it, so
    the memory holds at most the requests accepted within 2 × window.
    """

    def __init__(
        self,
        keys: Callable[[str], bytes | None],
        clock: Callable[[], datetime],
        window: int = DEFAULT_WINDOW,
    ):
        if window < 0:
            raise ValueError("window must be ≥ 0 seconds")
        self._keys = keys
        self._clock = clock
        self._window = window
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._expiries: list[tuple[int, str, str]] = []

    def verify(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        """The partner id of a genuine, fresh, first-seen request, or SignatureError.

        Checks in order: headers present and well-formed, partner known,
        timestamp fresh, signature, nonce unused — so a forged request
        never uses up the nonce of the genuine one.
        """
        values = _read_headers(headers)
        partner, timestamp, nonce = values[PARTNER_HEADER], values[TIMESTAMP_HEADER], values[NONCE_HEADER]
        key = self._keys(partner)
        if not key:
            raise SignatureError("UNKNOWN_PARTNER", f"{PARTNER_HEADER} names no partner this host knows")
        sent = int(timestamp)
        now = _unix_seconds(self._clock())
        if abs(now - sent) > self._window:
            raise SignatureError(
                "STALE_TIMESTAMP",
                f"{TIMESTAMP_HEADER} is {now - sent:+d} s from the host's clock; at most ±{self._window} s is accepted",
            )
        expected = _signature(key, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, values[SIGNATURE_HEADER]):
            raise SignatureError("BAD_SIGNATURE", f"{SIGNATURE_HEADER} does not match the request")
        with self._lock:
            self._forget(now)
            if (partner, nonce) in self._seen:
                raise SignatureError(
                    "REPLAYED_REQUEST", f"{NONCE_HEADER} was already used by this partner within {self._window} s"
                )
            expiry = sent + self._window
            self._seen[(partner, nonce)] = expiry
            heapq.heappush(self._expiries, (expiry, partner, nonce))
        return partner

    def _forget(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, partner, nonce = heapq.heappop(self._expiries)
            del self._seen[(partner, nonce)]


def _read_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The four headers by canonical name, found whatever their case."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers.items():
        by_name.setdefault(name.lower(), []).append(value)
    values: dict[str, str] = {}
    for name in HEADERS:
        found = by_name.get(name.lower(), [])
        if not found:
            raise SignatureError("MISSING_HEADER", f"missing header {name}")
        if len(found) > 1:
            raise SignatureError("MISSING_HEADER", f"header {name} is given more than once")
        pattern, expected = _FORMATS[name]
        if not isinstance(found[0], str) or not pattern.match(found[0]):
            raise SignatureError("MISSING_HEADER", f"header {name} must be {expected}")
        values[name] = found[0]
    return values
