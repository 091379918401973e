"""What happens to QR orders while nobody asks: expiry, and notifications delivered until acknowledged.

Runs as one task in the host's event loop, beside the TCP and HTTP fronts,
so its journal writes never interleave with theirs. Notifications live in
the journal: a host restarted mid-retry carries on where it stopped. Each is
signed with the partner's key (wire/api_signature.py) and repeated, with the
same notify_id, on the back-off of host.yaml until the partner answers 2xx
with `{"code": "SUCCESS"}`; then it is delivered, or after the last attempt
failed — never silently dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from urllib.parse import urlsplit

import aiohttp

from possim.wire.api_signature import new_nonce, sign

from .core import HostCore
from .journal import Notification, Unit
from .partners import Partners

log = logging.getLogger("possim.host")

TICK = 0.5
"""Seconds between looks at what is due: orders expire and callbacks leave within about this much of their time."""


class OrderTimers:
    def __init__(self, core: HostCore, partners: Partners, rng: random.Random | None = None, tick: float = TICK):
        self.core = core
        self.partners = partners
        self._rng = rng or random.Random()
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[str] = set()
        """notify_ids with an attempt under way: the next tick must not send them twice."""
        self._attempts: set[asyncio.Task[bool]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="possim-order-timers")

    async def stop(self) -> None:
        """Stop ticking and abandon attempts under way: unrecorded, they are made again after a restart."""
        tasks = [t for t in (self._task, *self._attempts) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.core.orders.settings.notify_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        while True:
            try:
                self.expire_due()
                for notification in self.core.journal.notifications_due(_stamp(self.core)):
                    if notification.notify_id in self._sending:
                        continue
                    self._sending.add(notification.notify_id)
                    task = asyncio.get_running_loop().create_task(self.deliver(notification))
                    self._attempts.add(task)
                    task.add_done_callback(self._attempts.discard)
            except Exception as exc:  # the timers keep running whatever one tick meets
                log.error("QR order timers: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self._tick)

    def expire_due(self) -> int:
        """Close every order whose time is up; returns how many."""
        closed = self.core.orders.close_expired(self.core.clock())
        if closed:
            log.info("%d QR order(s) expired and closed", closed)
        return closed

    async def deliver(self, notification: Notification) -> bool:
        """One attempt; the journal records its outcome. True when the partner acknowledged."""
        try:
            problem = await self._post(notification)
        finally:
            self._sending.discard(notification.notify_id)
        attempts = notification.attempts + 1
        now = self.core.clock()
        at = now.isoformat(timespec="milliseconds")
        settings = self.core.orders.settings
        if problem is None:
            state, next_at = "delivered", at
            log.info("notification %s (%s) delivered to %s after %d attempt(s)", notification.notify_id,
                     notification.event, notification.partner_id, attempts)
        elif attempts >= settings.notify_max_attempts:
            state, next_at = "failed", at
            log.warning("notification %s to %s failed for good after %d attempts: %s", notification.notify_id,
                        notification.partner_id, attempts, problem)
        else:
            state = "pending"
            next_at = (now + settings.notify_delay(attempts)).isoformat(timespec="milliseconds")
            log.info("notification %s to %s not acknowledged (%s); attempt %d at %s", notification.notify_id,
                     notification.partner_id, problem, attempts + 1, next_at)
        self.core.journal.record(Unit(notifications=(dataclasses.replace(
            notification, attempts=attempts, state=state, next_at=next_at, last_error=problem, updated_at=at,
        ),), at=at))
        return problem is None

    async def _post(self, notification: Notification) -> str | None:
        """None when acknowledged, else why not (never the partner's whole answer: it is theirs to log).

        Whatever goes wrong with one attempt is that attempt's failure, so every attempt is counted.
        """
        key = self.partners.key(notification.partner_id)
        if key is None:
            return f"partner {notification.partner_id} is no longer configured"
        body = notification.body.encode("utf-8")
        path = urlsplit(notification.url)
        target = path.path or "/"
        if path.query:
            target += "?" + path.query
        assert self._session is not None
        try:
            headers = sign(key, "POST", target, body, notification.partner_id, self.core.clock(), new_nonce(self._rng))
            headers["Content-Type"] = "application/json"
            # A redirect is not an acknowledgement: the notification must reach the notify_url itself.
            async with self._session.post(notification.url, data=body, headers=headers, allow_redirects=False) as answer:
                answered = await answer.read()
                if not 200 <= answer.status < 300:
                    return f"HTTP {answer.status}"
                if not _acknowledges(answered):
                    return f"answer is not {{\"code\": \"SUCCESS\"}} ({len(answered)} bytes)"
                return None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:  # ValueError: a URL it cannot send to
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _acknowledges(answer: bytes) -> bool:
    try:
        value = json.loads(answer.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("code") == "SUCCESS"


def _stamp(core: HostCore) -> str:
    return core.clock().isoformat(timespec="milliseconds")
