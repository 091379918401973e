"""What the host core tells its transport to do with one request."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rules import Rule


@dataclass(frozen=True)
class Reply:
    """Write `data` (a whole frame) after `delay` seconds, then close if `close`; `data` None sends nothing.

    `later` is an answer the core must wait for — a fee payment waits for the finance system — which the
    transport awaits without holding up anyone else, then treats the Reply it gives as this one.
    """

    data: bytes | None = None
    delay: float = 0.0
    close: bool = False
    later: Coroutine[Any, Any, Reply] | None = None


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
