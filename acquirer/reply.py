"""What the host core tells its transport to do with one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rules import Rule


@dataclass(frozen=True)
class Reply:
    """Write `data` (a whole frame) after `delay` seconds, then close if `close`; `data` None sends nothing."""

    data: bytes | None = None
    delay: float = 0.0
    close: bool = False


def shaped(data: bytes | None, rule: Rule | None) -> Reply:
    """The answer as a scenario rule shapes it: on time, late, never (drop) or never and hung up (close).
    The request is journaled and posted in every case, as a host whose answer is lost would have."""
    if rule is None:
        return Reply(data)
    if rule.drop:
        return Reply(None)
    if rule.close:
        return Reply(None, close=True)
    return Reply(data, rule.delay)
