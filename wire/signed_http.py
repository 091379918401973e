"""A small blocking client for the host's signed HTTP API: what a partner's system or a wallet app sends.

The standard library's urllib is enough for one request at a time from a
command line, a test or the demo; the signing is wire/api_signature.py's,
so client and host can never disagree on it.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .api_signature import new_nonce, sign
from .clock import Clock, system_clock


class HttpApiError(Exception):
    """The host could not be reached, or answered something that is not the API's JSON."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise HttpApiError(f"HTTP {self.status}: the answer is not JSON ({len(self.body)} bytes)") from None
        if not isinstance(value, dict):
            raise HttpApiError(f"HTTP {self.status}: the answer is not a JSON object")
        return value


class SignedClient:
    def __init__(self, base_url: str, caller: str, key: bytes, clock: Clock = system_clock,
                 rng: random.Random | None = None, timeout: float = 10.0):
        """`caller` is the partner ID, or `wallet:<account>` for a wallet app; `key` its signing key."""
        self.base_url = base_url.rstrip("/")
        self.caller = caller
        self._key = key
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = sign(self._key, method, path, data, self.caller, self._clock(), new_nonce(self._rng))
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data if body is not None else None,
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as answer:
                return Answer(answer.status, answer.read(), answer.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as refused:
            return Answer(refused.code, refused.read(), refused.headers.get("Content-Type", ""))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HttpApiError(f"cannot reach {self.base_url}: {reason}") from None

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Answer:
        return self.request("POST", path, body if body is not None else {})
