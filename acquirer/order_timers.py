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

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="possim-order-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.core.orders.settings.notify_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        attempts: set[asyncio.Task[None]] = set()
        while True:
            try:
                self.expire_due()
                for notification in self.core.journal.notifications_due(_stamp(self.core)):
                    if notification.notify_id in self._sending:
                        continue
                    self._sending.add(notification.notify_id)
                    task = asyncio.get_running_loop().create_task(self.deliver(notification))
                    attempts.add(task)
                    task.add_done_callback(attempts.discard)
            except Exception as exc:  # the timers keep running whatever one tick meets
                log.error("QR order timers: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self._tick)

    def expire_due(self) -> int:
        """Close every order whose time is up; returns how many."""
        changes = self.core.orders.expire(self.core.clock())
        for change in changes:
            self.core.journal.record(Unit(at=_stamp(self.core), **change.unit_parts()))
        if changes:
            log.info("%d QR order(s) expired and closed", len(changes))
        return len(changes)

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
        """None when acknowledged, else why not (never the partner's whole answer: it is theirs to log)."""
        key = self.partners.key(notification.partner_id)
        if key is None:
            return f"partner {notification.partner_id} is no longer configured"
        body = notification.body.encode("utf-8")
        path = urlsplit(notification.url)
        target = path.path or "/"
        if path.query:
            target += "?" + path.query
        headers = sign(key, "POST", target, body, notification.partner_id, self.core.clock(), new_nonce(self._rng))
        headers["Content-Type"] = "application/json"
        assert self._session is not None
        try:
            async with self._session.post(notification.url, data=body, headers=headers) as answer:
                text = await answer.text()
                if not 200 <= answer.status < 300:
                    return f"HTTP {answer.status}"
                try:
                    acknowledged = (await answer.json(content_type=None)).get("code") == "SUCCESS"
                except (ValueError, AttributeError):
                    acknowledged = False
                return None if acknowledged else f"answer is not {{\"code\": \"SUCCESS\"}} ({len(text)} bytes)"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _stamp(core: HostCore) -> str:
    return core.clock().isoformat(timespec="milliseconds")
