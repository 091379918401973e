"""A load run as the command line states it: mix, rate, duration and amounts, read into a `LoadPlan`.

Each reader raises PlanError naming the option and the part it could not
read, so `possim load` can print one line and exit.
"""

from __future__ import annotations

import re

from possim.wire.money import Currency, parse_major

from .driver import LoadPlan, Mix
from .protocol import KINDS


class PlanError(ValueError):
    """An option of a load run that cannot be read; the message names it."""


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_mix(text: str) -> Mix:
    """`purchase:80,refund:5,qr:15`: kinds and whole weights (percent, or any other unit)."""
    weights: dict[str, int] = {}
    for position, item in enumerate(filter(None, (part.strip() for part in text.split(","))), start=1):
        kind, colon, weight = item.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise PlanError(f"--mix item {position} ({item!r}): kind {kind!r} must be one of {', '.join(KINDS)}")
        if kind in weights:
            raise PlanError(f"--mix item {position} ({item!r}): {kind} is named twice")
        if not colon or not weight.strip().isdigit():
            raise PlanError(f"--mix item {position} ({item!r}): expected KIND:WEIGHT with a whole weight")
        weights[kind] = int(weight)
    if not weights or not any(weights.values()):
        raise PlanError(f"--mix {text!r}: no kind with a weight above 0")
    return Mix(tuple((kind, weight) for kind, weight in weights.items() if weight))


def parse_rate(text: str | None) -> float | None:
    """`2000/s` or `2000`: transactions per second over the fleet; None or `closed` for a closed loop."""
    if text is None or text.strip().lower() == "closed":
        return None
    number = text.strip().removesuffix("/s")
    try:
        rate = float(number)
    except ValueError:
        raise PlanError(f"--rate {text!r}: expected transactions per second, e.g. 2000/s, or closed") from None
    if not rate > 0:
        raise PlanError(f"--rate {text!r}: must be above 0")
    return rate


def parse_duration(text: str) -> float:
    """`60s`, `2m`, `500ms`, `1.5h` or a bare number of seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise PlanError(f"--duration {text!r}: expected a number with ms, s, m or h, e.g. 60s")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise PlanError(f"--duration {text!r}: must be above 0")
    return seconds


def parse_amounts(text: str, cur: Currency) -> tuple[int, int]:
    """`12.50` (every transaction) or `1.00-50.00` (drawn evenly), in major units of `cur`; minor units back."""
    low, dash, high = text.partition("-")
    try:
        least = parse_major(low.strip(), cur)
        most = parse_major(high.strip(), cur) if dash else least
    except ValueError as exc:
        raise PlanError(f"--amount {text!r}: {exc}") from None
    if least <= 0 or most < least:
        raise PlanError(f"--amount {text!r}: amounts must be above 0, the range least first")
    return least, most


def load_plan(*, duration: str, mix: str, amount: str, cur: Currency, rate: str | None, timeout: float,
              seed: int) -> LoadPlan:
    if not timeout > 0:
        raise PlanError(f"--timeout {timeout:g}: must be above 0 seconds")
    return LoadPlan(duration=parse_duration(duration), mix=parse_mix(mix), amounts=parse_amounts(amount, cur),
                    rate=parse_rate(rate), timeout=timeout, seed=seed)
