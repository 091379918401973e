"""Scenario rules: parsing, matching and reloading, on real files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from possim.acquirer.rules import RELOAD_INTERVAL, Request, Rules
from possim.fixtures import FixtureError

PAN = "6228480010000000017"  # the `approve` test card of cards.yaml


class Ticker:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, mtime: int | None = None) -> Path:
    """Write `text`; set the modification time explicitly, so a rewrite within one clock tick still shows."""
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))
    return path


def rules_of(tmp_path: Path, text: str, clock: Ticker | None = None) -> Rules:
    return Rules.from_file(write(tmp_path / "rules.yaml", text), clock or Ticker())


def request(mti: str = "0200", amount: int | None = 1000, **facts) -> Request:
    facts.setdefault("terminal", "10000001")
    facts.setdefault("processing_code", "000000")
    return Request(mti, amount, **facts)


# ---- the shipped file ----

AMOUNTS_IN_USE = (
    0, 100, 123, 200, 300, 500, 700, 777, 778, 800, 900, 999, 1000, 1001, 1002, 1003, 1004, 1111, 1234, 1250,
    1357, 1358, 1500, 1600, 2000, 2500, 2580, 3000, 4000, 4200, 4321, 5000, 8800, 9999, 12000, 15000, 23000,
)
"""Amounts the tests and the demo send expecting the host's ordinary answer."""


def test_the_shipped_rules_keep_the_demo_scenarios():
    rules = Rules.from_fixtures()
    malfunction = rules.match(request(amount=9601))
    late = rules.match(request(amount=6801))
    assert (malfunction.name, malfunction.respond) == ("system malfunction", "96")
    assert (late.name, late.respond, late.delay) == ("answer too late", None, 15.0)
    assert rules.match(request(amount=6802)).drop
    assert rules.match(request(amount=6803)).close
    assert rules.match(request(amount=7751)).respond == "51"
    assert rules.match(request("0220", amount=200_000, processing_code="200000")).respond == "57"
    assert rules.match(request("0221", amount=200_000, processing_code="200000")).respond == "57"
    assert rules.match(request("0200", amount=200_000, processing_code="200000")) is None, "a void is no refund"


@pytest.mark.parametrize("amount", AMOUNTS_IN_USE)
def test_no_shipped_rule_touches_the_amounts_tests_use(amount):
    rules = Rules.from_fixtures()
    for mti in ("0100", "0200", "0400", "0220", "0800"):
        for code in ("000000", "200000", "300000"):
            assert rules.match(request(mti, amount, processing_code=code, pan=PAN, card_last4=PAN[-4:])) is None


def test_a_fixtures_folder_overrides_the_builtin_rules(tmp_path):
    write(tmp_path / "host_rules.yaml", "rules:\n  - {name: mine, when: {amount: 9601}, respond: '05'}\n")
    assert Rules.from_fixtures(tmp_path).match(request(amount=9601)).respond == "05"
    assert Rules.from_fixtures(tmp_path).match(request(amount=6801)) is None


# ---- matching ----

MATCHING = [
    # (when, request, matches)
    ("{amount: 5101}", request(amount=5101), True),
    ("{amount: 5101}", request(amount=5102), False),
    ("{amount: 5101}", request(amount=None), False),
    ("{amount: {min: 100, max: 200}}", request(amount=100), True),
    ("{amount: {min: 100, max: 200}}", request(amount=200), True),
    ("{amount: {min: 100, max: 200}}", request(amount=99), False),
    ("{amount: {min: 100, max: 200}}", request(amount=201), False),
    ("{amount: {min: 100}}", request(amount=10**11), True),
    ("{amount: {max: 100}}", request(amount=0), True),
    ("{amount: {max: 100}}", request(amount=None), False),
    ("{amount_ends_with: '51'}", request(amount=7751), True),
    ("{amount_ends_with: '51'}", request(amount=51), True),
    ("{amount_ends_with: '51'}", request(amount=7715), False),
    ("{amount_ends_with: '051'}", request(amount=51), True),  # against field 4's 12 digits: 000000000051
    ("{amount_ends_with: '051'}", request(amount=151), False),
    ("{amount_ends_with: '51', amount: {min: 5000, max: 9999}}", request(amount=4951), False),
    ("{amount_ends_with: '51', amount: {min: 5000, max: 9999}}", request(amount=5051), True),
    ("{mti: '0220'}", request("0220"), True),
    ("{mti: '0220'}", request("0200"), False),
    ("{mti: ['0400', '0401']}", request("0401"), True),
    ("{mti: ['0400', '0401']}", request("0200"), False),
    ("{mti: 0800}", request("0800"), True),
    ("{mti: 0200}", request("0200"), True),  # unquoted: not YAML's octal 128
    ("{}", request("0100"), True),
    ("{}", request("0101"), True),
    ("{}", request("0201"), True),
    ("{}", request("0220"), False),  # advices only when named
    ("{}", request("0400"), False),
    ("{}", request("0800"), False),
    ("{processing_code: '20'}", request(processing_code="200000"), True),
    ("{processing_code: '20'}", request(processing_code="000000"), False),
    ("{processing_code: '200000'}", request(processing_code="200000"), True),
    ("{processing_code: '200000'}", request(processing_code="201000"), False),
    ("{processing_code: '20'}", request(processing_code=None), False),
    (f"{{pan: '{PAN}'}}", request(pan=PAN), True),
    (f"{{pan: '{PAN}'}}", request(pan=PAN[:-1] + "5"), False),
    (f"{{pan: '{PAN}'}}", request(), False),
    ("{bin: '622848'}", request(pan=PAN), True),
    ("{bin: '622848'}", request(pan="4000001000000018"), False),
    ("{bin: '622848'}", request(card_last4="0017"), False),
    ("{card: '0017'}", request(card_last4="0017"), True),
    ("{card: '0017'}", request(pan=PAN), True),
    ("{card: 0017}", request(card_last4="0017"), True),
    ("{card: '0017'}", request(card_last4="0025"), False),
    ("{terminal: '10000002'}", request(terminal="10000002"), True),
    ("{terminal: '10000002'}", request(terminal="10000001"), False),
    ("{terminal: [10000002, '10000003']}", request(terminal="10000003"), True),
    ("{terminal: '10000002', amount: 1000}", request(terminal="10000002", amount=1001), False),
]


@pytest.mark.parametrize(("when", "req", "expected"), MATCHING)
def test_a_rule_matches_only_when_every_condition_holds(tmp_path, when, req, expected):
    rules = rules_of(tmp_path, f"rules:\n  - name: under test\n    when: {when}\n    respond: '05'\n")
    assert (rules.match(req) is not None) == expected


def test_the_first_matching_rule_applies(tmp_path):
    rules = rules_of(tmp_path, (
        "rules:\n"
        "  - {name: exact, when: {amount: 5151}, respond: '05'}\n"
        "  - {name: ending, when: {amount_ends_with: '51'}, respond: '51'}\n"
    ))
    assert rules.match(request(amount=5151)).name == "exact"
    assert rules.match(request(amount=6151)).name == "ending"


def test_actions_become_attributes(tmp_path):
    rules = rules_of(tmp_path, (
        "rules:\n"
        "  - {name: late decline, when: {amount: 1}, respond: 05, delay: 2}\n"
        "  - {name: lost, when: {amount: 2}, drop: true}\n"
        "  - {name: hang up, when: {amount: 3}, close: true}\n"
        "  - {when: {amount: 4}, delay: 0.5}\n"
    ))
    late, lost, hang_up, unnamed = (rules.match(request(amount=n)) for n in (1, 2, 3, 4))
    assert (late.respond, late.delay, late.drop, late.close) == ("05", 2.0, False, False)
    assert (lost.respond, lost.delay, lost.drop, lost.close) == (None, 0.0, True, False)
    assert (hang_up.respond, hang_up.delay, hang_up.drop, hang_up.close) == (None, 0.0, False, True)
    assert (unnamed.name, unnamed.delay) == ("rule 4", 0.5)


def test_no_repr_shows_a_pan(tmp_path):
    rules = rules_of(tmp_path, f"rules:\n  - {{name: one card, when: {{pan: '{PAN}'}}, respond: '05'}}\n")
    rule = rules.match(request(pan=PAN))
    assert rule is not None
    assert PAN not in repr(rule)
    assert PAN not in repr(request(pan=PAN))


# ---- bad files ----

ODD = "  - {name: odd, when: {amount: 1}, "
BAD = [
    # (rule lines, what the message must say)
    ("  - name: odd\n    when: {colour: red}\n    respond: '05'\n",
     r"line 2: rule 'odd' \(#1\): unknown `when` key 'colour'"),
    ("  - name: odd\n    when: {amount: 1}\n    answer: '05'\n", r"rule 'odd' \(#1\): unknown key 'answer'"),
    ("  - {name: odd, when: {amount: 1}}\n", r"rule 'odd' \(#1\): no action"),
    ("  - {name: odd, when: {amount: 1}, respond: '5'}\n", r"rule 'odd' \(#1\): `respond` must be a 2-character"),
    ("  - {name: odd, when: {amount: 1}, delay: -1}\n", r"`delay` must be a number of seconds"),
    (ODD + "delay: true}\n", r"`delay` must be a number of seconds"),
    (ODD + "delay: .inf}\n", r"`delay` must be a number of seconds"),
    ("  - {name: odd, when: {amount: 1}, drop: 'yes'}\n", r"`drop` must be true or false"),
    (ODD + "drop: true, respond: '05'}\n", r"`drop` sends no answer, so it cannot go with `respond`"),
    (ODD + "close: true, delay: 1}\n", r"`close` sends no answer, so it cannot go with `delay`"),
    (ODD + "drop: true, close: true}\n", r"`drop` sends no answer, so it cannot go with `close`"),
    ("  - {name: odd, when: {amount: 12.5}, respond: '05'}\n", r"`when.amount` must be a whole number"),
    ("  - {name: odd, when: {amount: -1}, respond: '05'}\n", r"`when.amount` must be a whole number"),
    ("  - {name: odd, when: {amount: {min: 200, max: 100}}, respond: '05'}\n",
     r"`when.amount.min` \(200\) is above `when.amount.max` \(100\)"),
    ("  - {name: odd, when: {amount: {least: 1}}, respond: '05'}\n", r"unknown `when.amount` key 'least'"),
    ("  - {name: odd, when: {amount: {}}, respond: '05'}\n", r"`when.amount` as a range needs"),
    ("  - {name: odd, when: {amount_ends_with: '5x'}, respond: '05'}\n",
     r"`when.amount_ends_with` must be 1 to 12 digits"),
    ("  - {name: odd, when: {mti: '200'}, respond: '05'}\n", r"`when.mti` must be 4 digits"),
    ("  - {name: odd, when: {mti: []}, respond: '05'}\n", r"`when.mti` is an empty list"),
    ("  - {name: odd, when: {processing_code: '2000'}, respond: '05'}\n",
     r"`when.processing_code` must be 2 or 6 digits"),
    ("  - {name: odd, when: {card: '17'}, respond: '05'}\n", r"`when.card` must be the last 4 digits"),
    ("  - {name: odd, when: {terminal: '123456789'}, respond: '05'}\n", r"`when.terminal` must be a terminal ID"),
    ("  - {name: ok, when: {amount: 1}, respond: '05'}\n  - {when: {amount: 2}}\n", r"line 3: rule #2: no action"),
    ("  - just text\n", r"line 2: rule #1 must be a mapping"),
    ("  - {name: odd, when: [1], respond: '05'}\n", r"rule 'odd' \(#1\): `when` must be a mapping"),
    ("  - {name: odd, when: {amount: 1}, respond: '05'\n", r"line \d+: not valid YAML"),
]


@pytest.mark.parametrize(("lines", "expected"), BAD)
def test_a_bad_rule_is_one_error_naming_file_line_rule_and_key(tmp_path, lines, expected):
    path = write(tmp_path / "rules.yaml", "rules:\n" + lines)
    with pytest.raises(FixtureError, match=expected) as caught:
        Rules.from_file(path)
    assert str(caught.value).startswith(str(path))


def test_a_bad_pan_is_not_quoted_back(tmp_path):
    almost = PAN + "0123"  # 23 digits: too long for a PAN, and must not appear in the message
    path = write(tmp_path / "rules.yaml", f"rules:\n  - {{name: odd, when: {{pan: '{almost}'}}, respond: '05'}}\n")
    with pytest.raises(FixtureError, match=r"`when.pan` must be 12 to 19 digits") as caught:
        Rules.from_file(path)
    assert PAN not in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("", "expected a mapping at the top level"),
    ("- a list\n", "expected a mapping at the top level"),
    ("rules: {a: 1}\n", "`rules` must be a list"),
    ("rule:\n  - {when: {amount: 1}, respond: '05'}\n", "unknown top-level key 'rule'"),
])
def test_a_bad_file_shape_is_named(tmp_path, text, expected):
    with pytest.raises(FixtureError, match=expected):
        rules_of(tmp_path, text)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FixtureError, match=r"rules\.yaml: cannot read"):
        Rules.from_file(tmp_path / "rules.yaml")


# ---- reloading ----

FIRST = "rules:\n  - {name: first, when: {amount: 5101}, respond: '05'}\n"
SECOND = "rules:\n  - {name: second, when: {amount: 5101}, respond: '51'}\n"
BROKEN = "rules:\n  - {name: fine, when: {amount: 5101}, respond: '05'}\n  - {name: broken, when: {amount: 1}}\n"
T0 = 1_700_000_000_000_000_000


def test_a_changed_file_is_reloaded_after_at_most_a_second(tmp_path):
    clock = Ticker()
    path = write(tmp_path / "rules.yaml", FIRST, T0)
    rules = Rules.from_file(path, clock)
    write(path, SECOND, T0 + 1)
    clock.now += RELOAD_INTERVAL / 2
    assert rules.match(request(amount=5101)).name == "first"  # not looked at yet
    clock.now += RELOAD_INTERVAL / 2
    assert rules.match(request(amount=5101)).name == "second"


def test_the_file_is_looked_at_once_a_second_at_most(tmp_path):
    clock = Ticker()
    path = write(tmp_path / "rules.yaml", FIRST, T0)
    rules = Rules.from_file(path, clock)
    clock.now += RELOAD_INTERVAL
    assert rules.match(request(amount=5101)).name == "first"  # looked: unchanged
    write(path, SECOND, T0 + 1)
    clock.now += RELOAD_INTERVAL * 0.9
    assert rules.match(request(amount=5101)).name == "first"  # within a second of the last look
    clock.now += RELOAD_INTERVAL * 0.1
    assert rules.match(request(amount=5101)).name == "second"


def test_a_reload_that_fails_keeps_the_rules_and_warns_once(tmp_path, caplog):
    clock = Ticker()
    path = write(tmp_path / "rules.yaml", FIRST, T0)
    rules = Rules.from_file(path, clock)
    write(path, BROKEN, T0 + 1)
    with caplog.at_level(logging.WARNING, logger="possim.host"):
        for _ in range(3):
            clock.now += RELOAD_INTERVAL
            assert rules.match(request(amount=5101)).name == "first"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{path} line 3: rule 'broken' (#2): no action" in warning.getMessage()
    write(path, SECOND, T0 + 2)
    clock.now += RELOAD_INTERVAL
    assert rules.match(request(amount=5101)).name == "second"


def test_a_reload_with_bad_yaml_names_the_line(tmp_path, caplog):
    clock = Ticker()
    path = write(tmp_path / "rules.yaml", FIRST, T0)
    rules = Rules.from_file(path, clock)
    write(path, "rules:\n  - {name: x, when: {amount: 1}, respond: '05'\n", T0 + 1)
    clock.now += RELOAD_INTERVAL
    with caplog.at_level(logging.WARNING, logger="possim.host"):
        assert rules.match(request(amount=5101)).name == "first"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{path} line 3: not valid YAML" in warning.getMessage()


def test_a_deleted_file_keeps_the_rules_and_warns_once(tmp_path, caplog):
    clock = Ticker()
    path = write(tmp_path / "rules.yaml", FIRST, T0)
    rules = Rules.from_file(path, clock)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="possim.host"):
        for _ in range(3):
            clock.now += RELOAD_INTERVAL
            assert rules.match(request(amount=5101)).name == "first"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    write(path, SECOND, T0 + 1)
    clock.now += RELOAD_INTERVAL
    assert rules.match(request(amount=5101)).name == "second"


def test_rules_without_a_file_never_look_for_one():
    clock = Ticker()
    rules = Rules([], clock=clock)
    clock.now += 10 * RELOAD_INTERVAL
    assert rules.match(request()) is None
