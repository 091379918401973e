"""Scenario rules: how a tester makes the host misbehave on purpose.

Read from `host_rules.yaml` (or any file, `Rules.from_file`). The first rule
whose `when` matches a request applies. `when` can name the MTI (one or a
list), the processing code (6 digits, or 2 for the transaction type), the
PAN, a BIN (a PAN prefix), the card's last 4 digits, the amount (exact, a
`{min, max}` range, or `amount_ends_with` its last digits) and the terminal
(one or a list); every key given must match. Actions:

- `respond: "96"` answers that code; nothing is posted. May come with `delay`.
- `delay: 15` holds the host's real answer that many seconds (journaled and
  posted first, as on a slow network).
- `drop: true` journals and posts as usual but sends no answer.
- `close: true` journals and posts as usual, sends no answer and closes the
  connection.

A rule without an `mti` key applies to authorizations and purchases only
(0100, 0200 and their repeats): `when: {amount: 6801}` must not also delay
the reversal a terminal sends for that very amount, or the late-answer
scenario could never recover. Advices (0220: offline sales, completions)
are left out too: they report what already happened, and a rule written to
decline a purchase must not make a terminal's store-and-forward queue
retry forever. Name an `mti` to aim a rule at sign-ons, advices, reversals
or anything else.

The file is watched: `match` looks at its modification time at most once a
second and reloads it when it changed. A file that no longer loads keeps
the rules in force and logs one warning naming the file and line.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from possim.fixtures import FixtureError, fixture_path

log = logging.getLogger("possim.host")

RULES_FILE = "host_rules.yaml"
RELOAD_INTERVAL = 1.0
"""Seconds between two looks at the rules file's modification time."""
_WHEN_KEYS = ("mti", "processing_code", "pan", "bin", "card", "amount", "amount_ends_with", "terminal")
_RULE_KEYS = ("name", "when", "respond", "delay", "drop", "close")
_DEFAULT_MTIS = frozenset({"0100", "0101", "0200", "0201"})
_AMOUNT_DIGITS = 12
"""Field 4's length: `amount_ends_with` compares against the amount written that wide."""


@dataclass(frozen=True)
class Request:
    """The facts about a request that rules can match on."""

    mti: str
    amount: int | None = None
    terminal: str | None = None
    processing_code: str | None = None
    card_last4: str | None = None
    pan: str | None = field(default=None, repr=False)
    """The full PAN, for `pan` and `bin` rules; never shown in a repr."""


@dataclass(frozen=True)
class Rule:
    """One rule: conditions (None or empty: any) and what the host does instead of its usual answer."""

    name: str
    mti: frozenset[str] = frozenset()
    """Empty: 0100, 0101, 0200 and 0201 only."""
    processing_code: str | None = None
    """6 digits, or a prefix (2 digits: the transaction type)."""
    pan: str | None = field(default=None, repr=False)
    bin: str | None = None
    card: str | None = None
    """Last 4 digits of the PAN."""
    amount: int | None = None
    amount_min: int | None = None
    amount_max: int | None = None
    amount_ends_with: str | None = None
    terminal: frozenset[str] = frozenset()
    respond: str | None = None
    delay: float = 0.0
    drop: bool = False
    """Journal and post as usual, send nothing."""
    close: bool = False
    """Journal and post as usual, send nothing and close the connection."""

    def matches(self, request: Request) -> bool:
        if request.mti not in (self.mti or _DEFAULT_MTIS):
            return False
        if self.terminal and request.terminal not in self.terminal:
            return False
        if self.processing_code is not None and not (request.processing_code or "").startswith(self.processing_code):
            return False
        return self._card_matches(request) and self._amount_matches(request.amount)

    def _card_matches(self, request: Request) -> bool:
        pan = request.pan
        last4 = request.card_last4 or (pan[-4:] if pan else None)
        return (
            (self.pan is None or pan == self.pan)
            and (self.bin is None or (pan is not None and pan.startswith(self.bin)))
            and (self.card is None or last4 == self.card)
        )

    def _amount_matches(self, amount: int | None) -> bool:
        limits = (self.amount, self.amount_min, self.amount_max, self.amount_ends_with)
        if all(limit is None for limit in limits):
            return True
        return (
            amount is not None
            and (self.amount is None or amount == self.amount)
            and (self.amount_min is None or amount >= self.amount_min)
            and (self.amount_max is None or amount <= self.amount_max)
            and (self.amount_ends_with is None or f"{amount:0{_AMOUNT_DIGITS}d}".endswith(self.amount_ends_with))
        )


class Rules:
    """The rules in force, reloaded from `source` (when given) as it changes."""

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        source: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`clock` returns seconds (time.monotonic by default); it paces the looks at `source`."""
        self.rules = tuple(rules)
        self.source = source
        self._clock = clock
        self._checked = clock()
        self._stamp: tuple[int, int] | None = None
        """The version of `source` last read, loaded or not: a version that failed is warned about once."""

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None, clock: Callable[[], float] = time.monotonic) -> Rules:
        """`host_rules.yaml` of the fixtures folder, or the built-in one."""
        return cls.from_file(fixture_path(RULES_FILE, folder), clock)

    @classmethod
    def from_file(cls, path: str | Path, clock: Callable[[], float] = time.monotonic) -> Rules:
        """Rules read from `path` (`possim host run --rules FILE`); FixtureError if it cannot be used."""
        source = Path(path)
        stamp = _stamp(source)  # taken before reading: a change while reading shows at the next look
        rules = cls(_load(source), source, clock)
        rules._stamp = stamp
        return rules

    def match(self, request: Request) -> Rule | None:
        self._reload_if_changed()
        for rule in self.rules:
            if rule.matches(request):
                return rule
        return None

    def _reload_if_changed(self) -> None:
        if self.source is None:
            return
        now = self._clock()
        if now - self._checked < RELOAD_INTERVAL:
            return
        self._checked = now
        stamp = _stamp(self.source)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            rules = _load(self.source)
        except FixtureError as exc:
            log.warning("%s; keeping the %d rules in force", exc, len(self.rules))
            return
        self.rules = rules
        log.info("%s: reloaded, %d scenario rules", self.source, len(rules))


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time in ns, size): what changes when the file is rewritten; None if it is gone."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


class _Loader(yaml.SafeLoader):
    """Safe YAML, except that a number written with a leading zero stays the text as written.

    YAML 1.1 reads `mti: 0200` as octal 128 and `respond: 05` as 5; here they
    stay "0200" and "05", which is what anyone writing them means.
    """


def _int_or_digits(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    if re.fullmatch(r"0[0-9]+", node.value):
        return node.value
    return loader.construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _int_or_digits)


def _load(source: Path) -> tuple[Rule, ...]:
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{source}: cannot read the rules file: {getattr(exc, 'strerror', None) or exc}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FixtureError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise FixtureError(f"{source}: expected a mapping at the top level (`rules:` and a list)")
    unknown = set(data) - {"rules"}
    if unknown:
        raise FixtureError(f"{source}: unknown top-level key {sorted(map(str, unknown))[0]!r} (expected rules)")
    entries = data.get("rules") or []
    if not isinstance(entries, list):
        raise FixtureError(f"{source}: `rules` must be a list")
    lines = _entry_lines(root, len(entries))
    return tuple(
        _rule(entry, index, f"{source} line {line}") for index, (entry, line) in enumerate(zip(entries, lines), 1)
    )


def _entry_lines(root: yaml.Node, count: int) -> list[int]:
    """The line (1-based) where each entry of `rules` starts, for error messages."""
    for key, value in root.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return [root.start_mark.line + 1] * count


def _rule(entry: Any, index: int, at: str) -> Rule:
    if not isinstance(entry, dict):
        raise FixtureError(f"{at}: rule #{index} must be a mapping")
    name = entry.get("name")
    where = f"{at}: rule {str(name)!r} (#{index})" if name is not None else f"{at}: rule #{index}"
    unknown = set(entry) - set(_RULE_KEYS)
    if unknown:
        raise FixtureError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r} (expected {', '.join(_RULE_KEYS)})")
    when = entry.get("when") or {}
    if not isinstance(when, dict):
        raise FixtureError(f"{where}: `when` must be a mapping")
    unknown = set(when) - set(_WHEN_KEYS)
    if unknown:
        raise FixtureError(f"{where}: unknown `when` key {sorted(map(str, unknown))[0]!r} (expected {', '.join(_WHEN_KEYS)})")
    amount, amount_min, amount_max = _amount_condition(when.get("amount"), where)
    return Rule(
        name=str(name) if name is not None else f"rule {index}",
        mti=frozenset(_texts(when, "mti", where, r"[0-9]{4}", "4 digits such as '0200'")),
        processing_code=_digits(when, "processing_code", where, r"[0-9]{2}|[0-9]{6}", "2 or 6 digits"),
        pan=_digits(when, "pan", where, r"[0-9]{12,19}", "12 to 19 digits"),
        bin=_digits(when, "bin", where, r"[0-9]{1,19}", "1 to 19 digits"),
        card=_digits(when, "card", where, r"[0-9]{4}", "the last 4 digits of the PAN"),
        amount=amount,
        amount_min=amount_min,
        amount_max=amount_max,
        amount_ends_with=_digits(when, "amount_ends_with", where, rf"[0-9]{{1,{_AMOUNT_DIGITS}}}", "1 to 12 digits"),
        terminal=frozenset(_texts(when, "terminal", where, r".{1,8}", "a terminal ID of 1 to 8 characters")),
        **_actions(entry, where),
    )


def _actions(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """`respond` (with an optional `delay`), `delay` alone, `drop: true` or `close: true`."""
    drop = _flag(entry, "drop", where)
    close = _flag(entry, "close", where)
    respond = entry.get("respond")
    if respond is not None:
        respond = str(respond)
        if not re.fullmatch(r"[0-9A-Z]{2}", respond):
            raise FixtureError(f"{where}: `respond` must be a 2-character response code such as '05', got {respond!r}")
    delay = entry.get("delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                              or not math.isfinite(delay) or delay < 0):
        raise FixtureError(f"{where}: `delay` must be a number of seconds, got {delay!r}")
    if drop or close:
        sole = "drop" if drop else "close"
        extra = [key for key, given in (("respond", respond is not None), ("delay", delay is not None),
                                        ("close", drop and close)) if given]
        if extra:
            raise FixtureError(f"{where}: `{sole}` sends no answer, so it cannot go with `{extra[0]}`")
    elif respond is None and delay is None:
        raise FixtureError(f"{where}: no action: give `respond`, `delay`, `drop: true` or `close: true`")
    return {"respond": respond, "delay": float(delay or 0.0), "drop": drop, "close": close}


def _flag(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise FixtureError(f"{where}: `{key}` must be true or false, got {value!r}")
    return value


def _amount(value: Any, key: str, where: str) -> int | None:
    """Minor units: a whole number, or digits as text (a leading zero keeps a YAML number as text)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FixtureError(f"{where}: `{key}` must be a whole number of minor units, got {value!r}")
    return value


def _amount_condition(value: Any, where: str) -> tuple[int | None, int | None, int | None]:
    """`when.amount` as (exact, min, max): a number, or a mapping with `min`, `max` or both."""
    if not isinstance(value, dict):
        return _amount(value, "when.amount", where), None, None
    unknown = set(value) - {"min", "max"}
    if unknown:
        raise FixtureError(f"{where}: unknown `when.amount` key {sorted(map(str, unknown))[0]!r} (expected min, max)")
    if not value:
        raise FixtureError(f"{where}: `when.amount` as a range needs `min`, `max` or both")
    low = _amount(value.get("min"), "when.amount.min", where)
    high = _amount(value.get("max"), "when.amount.max", where)
    if low is not None and high is not None and low > high:
        raise FixtureError(f"{where}: `when.amount.min` ({low}) is above `when.amount.max` ({high})")
    return None, low, high


def _digits(when: dict[str, Any], key: str, where: str, pattern: str, expected: str) -> str | None:
    """A `when` value that must be digits; a PAN is never quoted back in the error."""
    value = when.get(key)
    if value is None:
        return None
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not re.fullmatch(pattern, text):
        raise FixtureError(f"{where}: `when.{key}` must be {expected}")
    return text


def _texts(when: dict[str, Any], key: str, where: str, pattern: str, expected: str) -> list[str]:
    """A `when` value given as one value or a list of them."""
    value = when.get(key)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not values:
        raise FixtureError(f"{where}: `when.{key}` is an empty list")
    texts = []
    for item in values:
        text = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else None
        if text is None or not re.fullmatch(pattern, text):
            raise FixtureError(f"{where}: `when.{key}` must be {expected} (or a list of them), got {item!r}")
        texts.append(text)
    return texts
