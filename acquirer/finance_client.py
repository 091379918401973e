"""The host's link to the finance bureau's non-tax system: one request, one answer, over TCP.

A connection per request keeps the client free of shared state between
concurrent fee payments, and a lost connection costs one request, not a
pipeline of them. Every wait is bounded by the timeout: a payment waiting
on the finance system must know when to give up, because what it does then
(retry the confirmation, or roll the payment back) is the closed loop's
whole point.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from possim.wire.nontax import FrameReader, NontaxError, NontaxMessage, decode, encode, frame, new_msg_id


class FinanceUnavailable(RuntimeError):
    """No answer in time (or no connection): the request may or may not have been acted on."""


class FinanceClient:
    def __init__(self, address: tuple[str, int], key: bytes, clock: Callable[[], datetime], rng: random.Random,
                 timeout: float, sender: str, receiver: str = "FINANCE"):
        self.address = address
        self._key = key
        self._clock = clock
        self._rng = rng
        self.timeout = timeout
        self._sender = sender
        self._receiver = receiver

    async def exchange(self, msg_type: str, body: dict[str, Any]) -> NontaxMessage:
        """Send one request and return the finance system's answer, its MAC checked."""
        now = self._clock()
        request = NontaxMessage(msg_type, new_msg_id(self._rng, now), self._sender, self._receiver,
                                now.strftime("%Y%m%d%H%M%S"), body)
        try:
            return await asyncio.wait_for(self._round_trip(encode(request, self._key)), self.timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            why = "no answer" if isinstance(exc, asyncio.TimeoutError) else f"cannot connect: {exc.strerror or exc}"
            raise FinanceUnavailable(f"finance system {self.address[0]}:{self.address[1]}: {why} within"
                                     f" {self.timeout:g} s to {msg_type}") from None

    async def _round_trip(self, xml: bytes) -> NontaxMessage:
        reader, writer = await asyncio.open_connection(*self.address)
        try:
            writer.write(frame(xml))
            await writer.drain()
            frames = FrameReader()
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("the finance system closed the connection without answering")
                answers = frames.feed(data)
                if answers:
                    return decode(answers[0], self._key)
        except NontaxError as exc:
            raise FinanceUnavailable(f"finance system answered something unusable: {exc}") from None
        finally:
            writer.close()
