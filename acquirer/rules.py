"""Scenario rules: how a tester makes the host misbehave on purpose.

Read from `host_rules.yaml`. The first rule whose `when` matches a request
applies: `respond` answers that code (nothing is posted), `delay` holds
the host's real answer for that many seconds.

A rule without an `mti` key applies to authorizations and purchases only
(0100, 0200 and their repeats): `when: {amount: 6801}` must not also delay
the reversal a terminal sends for that very amount, or the late-answer
scenario could never recover. Name an `mti` to aim a rule at sign-ons,
reversals or anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture

_WHEN_KEYS = ("amount", "terminal", "mti", "processing_code", "card")
_DEFAULT_MTIS = frozenset({"0100", "0101", "0200", "0201"})


@dataclass(frozen=True)
class Request:
    """The facts about a request that rules can match on."""

    mti: str
    amount: int | None = None
    terminal: str | None = None
    processing_code: str | None = None
    card_last4: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    amount: int | None = None
    terminal: str | None = None
    mti: str | None = None
    processing_code: str | None = None
    card: str | None = None
    respond: str | None = None
    delay: float = 0.0

    def matches(self, request: Request) -> bool:
        if self.mti is None:
            if request.mti not in _DEFAULT_MTIS:
                return False
        elif request.mti != self.mti:
            return False
        return (
            (self.amount is None or request.amount == self.amount)
            and (self.terminal is None or request.terminal == self.terminal)
            and (self.processing_code is None or request.processing_code == self.processing_code)
            and (self.card is None or request.card_last4 == self.card)
        )


class Rules:
    def __init__(self, rules: list[Rule]):
        self.rules = tuple(rules)

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> Rules:
        source = fixture_path("host_rules.yaml", folder)
        entries = load_fixture("host_rules.yaml", folder).get("rules") or []
        if not isinstance(entries, list):
            raise FixtureError(f"{source}: `rules` must be a list")
        return cls([_rule(entry, index, source) for index, entry in enumerate(entries, 1)])

    def match(self, request: Request) -> Rule | None:
        for rule in self.rules:
            if rule.matches(request):
                return rule
        return None


def _rule(entry: Any, index: int, source: Path) -> Rule:
    if not isinstance(entry, dict):
        raise FixtureError(f"{source}: rule {index} must be a mapping")
    name = str(entry.get("name", f"rule {index}"))
    where = f"{source}: rule {name!r}"
    unknown = set(entry) - {"name", "when", "respond", "delay"}
    if unknown:
        raise FixtureError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected name, when, respond, delay)")
    when = entry.get("when") or {}
    if not isinstance(when, dict):
        raise FixtureError(f"{where}: `when` must be a mapping")
    unknown = set(when) - set(_WHEN_KEYS)
    if unknown:
        raise FixtureError(f"{where}: unknown `when` key {sorted(unknown)[0]!r} (expected {', '.join(_WHEN_KEYS)})")
    if ("respond" in entry) == ("delay" in entry):
        raise FixtureError(f"{where}: give exactly one action, `respond` or `delay`")
    respond = None
    delay = 0.0
    if "respond" in entry:
        respond = str(entry["respond"])
        if len(respond) != 2:
            raise FixtureError(f"{where}: `respond` must be a 2-character response code, got {respond!r}")
    else:
        delay = entry["delay"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise FixtureError(f"{where}: `delay` must be a number of seconds, got {delay!r}")
    amount = when.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        raise FixtureError(f"{where}: `when.amount` must be a whole number of minor units, got {amount!r}")
    return Rule(
        name=name,
        amount=amount,
        terminal=_optional_text(when, "terminal"),
        mti=_optional_text(when, "mti", 4),
        processing_code=_optional_text(when, "processing_code", 6),
        card=_optional_text(when, "card", 4),
        respond=respond,
        delay=float(delay),
    )


def _optional_text(when: dict[str, Any], key: str, digits: int = 0) -> str | None:
    """A `when` value as text; an unquoted YAML number (`mti: 0800` reads as 800) gets its zeros back."""
    value = when.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).zfill(digits)
    return str(value)
