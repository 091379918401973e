"""What the host core tells its transport to do with one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """Write `data` (a whole frame) after `delay` seconds, then close if `close`; `data` None sends nothing."""

    data: bytes | None = None
    delay: float = 0.0
    close: bool = False
