"""A link that remembers every exchange it carried, so replay can show and check exactly what went over the wire.

The terminal keeps no copy of the frames it sent or the answers it got; a
scenario step needs both (its expectations are on the answer to its own
request, its trace is that exchange), so the runner puts a `TapLink` between
each terminal and its real link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from possim.wire.clock import Clock, system_clock

from ..link import Link


@dataclass(frozen=True)
class Exchange:
    """One request frame and what became of it."""

    frame: bytes
    """The whole frame sent, length header included."""
    payload: bytes | None
    """The answer's payload (envelope and body, no length header); None when none came."""
    error: Exception | None
    """Why no answer came: LinkTimeout, LinkError, or FramingError for an answer that could not be read."""
    sent_at: datetime
    ended_at: datetime
    """When the answer came, or the exchange failed."""


class TapLink:
    """Wraps a `Link`, recording each exchange in `exchanges` (in order) before its result goes back."""

    def __init__(self, link: Link, clock: Clock = system_clock, peer: str | None = None):
        """`peer` is the address traces name: the wrapped link's, unless the host is really elsewhere (behind
        replay's proxy)."""
        self.link = link
        self.clock = clock
        self.exchanges: list[Exchange] = []
        self._peer = peer

    @property
    def peer(self) -> str:
        return self._peer if self._peer is not None else str(getattr(self.link, "peer", "?"))

    async def exchange(self, frame: bytes, timeout: float) -> bytes:
        sent_at = self.clock()
        try:
            payload = await self.link.exchange(frame, timeout)
        except Exception as exc:
            self.exchanges.append(Exchange(frame, None, exc, sent_at, self.clock()))
            raise
        self.exchanges.append(Exchange(frame, payload, None, sent_at, self.clock()))
        return payload

    async def close(self) -> None:
        await self.link.close()
