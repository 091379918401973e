"""Reading replay scenarios: a YAML file in, a checked `Scenario` out, or one error naming file, line and key.

Three passes, each relying on the one before. The YAML is composed to nodes
so every value keeps its line and a key written twice is caught (PyYAML would
silently keep the last). The result is validated against the shipped JSON
Schema, the same document editors check with, so file and editor never
disagree about the format. Then come the checks a schema cannot make: cards,
terminals and wallets of the fixtures, hex frames, regular expressions, and
every `${name}` defined before its step runs, so a run never stops halfway
on a typo.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from string import hexdigits
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance

from possim.fixtures import FixtureError
from possim.terminal.cards import Card, CardError, fixture_cards, resolve_card
from possim.terminal.profile import ProfileError, load_profile
from possim.terminal.wallet_app import WalletAppError, login
from possim.wire.dialect import builtin_names, load_dialect
from possim.wire.payment_code import luhn_digit
from possim.wire.trace import mask_pan

from .model import ACTIONS, Checks, Fault, JournalCheck, Matcher, Scenario, Step, TerminalUse, Where
from .values import references, substitute

DEFAULT_TERMINALS = {"pos": "10000001"}
"""A scenario that names no terminals runs on the first terminal of the built-in terminals.yaml."""
FINANCE_ACTIONS = frozenset(a for a in ACTIONS if a.startswith("fee_"))
"""Steps that need the host's finance system (fee collection)."""

Key = tuple[str | int, ...]
"""A path from the document's top: ("steps", 2, "expect", "39")."""


class ScenarioError(ValueError):
    """A scenario that cannot run; str is `FILE:LINE: KEY: message` (the key left out when the YAML itself is
    broken, the file and line too when the trouble is no file at all)."""

    def __init__(self, message: str, where: Where | None = None) -> None:
        self.message = message
        self.where = where
        if where is None:
            text = message
        elif where.key:
            text = f"{where}: {message}"
        else:
            text = f"{where.file}:{where.line}: {message}"
        super().__init__(text)


def schema() -> dict[str, Any]:
    """The JSON Schema of the scenario format, as shipped beside this module (a fresh copy each call)."""
    return json.loads(resources.files(__package__).joinpath("scenario.schema.json").read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def load_scenarios(paths: Iterable[Path], *, fixtures_dir: Path | None = None,
                   default_dialect: str = "cup") -> list[Scenario]:
    """Every scenario of `paths`: files as given, folders as every *.yaml / *.yml under them, sorted.

    Two scenarios of one name would be indistinguishable in reports and to
    `-k`, so that is an error naming both files.
    """
    scenarios: list[Scenario] = []
    named: dict[str, Path] = {}
    for path in _expand(paths):
        scenario, name_at = _load(path, fixtures_dir, default_dialect)
        if scenario.name in named:
            raise ScenarioError(f"scenario name {scenario.name!r} is also the name of {named[scenario.name]}", name_at)
        named[scenario.name] = path
        scenarios.append(scenario)
    return scenarios


def load_scenario(path: Path, *, fixtures_dir: Path | None = None, default_dialect: str = "cup") -> Scenario:
    """The scenario in the YAML file `path`, checked through: anything wrong raises ScenarioError."""
    return _load(path, fixtures_dir, default_dialect)[0]


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ScenarioError(f"{path}: no *.yaml scenarios in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ScenarioError(f"{path}: no such file or folder")
    unique = {p.resolve(): p for p in reversed(files)}
    return [p for p in files if unique[p.resolve()] is p]


def _load(path: Path, fixtures_dir: Path | None, default_dialect: str) -> tuple[Scenario, Where]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    doc = _Document.parse(text, str(path))
    error = best_match(_validator().iter_errors(doc.data), key=doc.relevance)
    if error is not None:
        key, message = _explain(error)
        raise ScenarioError(message, doc.where(key))
    scenario = _Builder(doc, path, fixtures_dir, default_dialect).scenario()
    return scenario, doc.where(("name",))


class _Document:
    """Plain data (mappings keyed by text, as JSON has them) and the line each key or item was written on."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Key, int] = {}
        self.data: Any = None

    @classmethod
    def parse(cls, text: str, file: str) -> _Document:
        doc = cls(file)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise ScenarioError("empty file: a scenario needs steps", Where(file, 1, ""))
            doc.lines[()] = root.start_mark.line + 1
            doc.data = doc._value(loader, root, (), set())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "unreadable"
            raise ScenarioError(f"not valid YAML: {problem}", Where(file, mark.line + 1 if mark else 1, "")) from None
        finally:
            loader.dispose()
        return doc

    def _value(self, loader: yaml.SafeLoader, node: yaml.Node, key: Key, open_nodes: set[int]) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return _scalar(loader, node)
        if id(node) in open_nodes:
            raise ScenarioError("an alias refers to the mapping or list it is in", self.where(key))
        open_nodes = open_nodes | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[key + (index,)] = item.start_mark.line + 1
                items.append(self._value(loader, item, key + (index,), open_nodes))
            return items
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError("a key must be a plain value, not a mapping or list", Where(self.file, line, _dotted(key)))
            name = key_node.value
            if name in mapping:
                first = self.lines[key + (name,)]
                raise ScenarioError(f"written twice (first on line {first})", Where(self.file, line, _dotted(key + (name,))))
            self.lines[key + (name,)] = line
            mapping[name] = self._value(loader, value_node, key + (name,), open_nodes)
        return mapping

    def line(self, key: Key) -> int:
        """The line of `key`, or of the nearest enclosing key written in the file."""
        while key not in self.lines:
            key = key[:-1]
        return self.lines[key]

    def where(self, key: Key) -> Where:
        return Where(self.file, self.line(key), _dotted(key))

    def relevance(self, error: ValidationError) -> tuple[Any, ...]:
        """jsonschema's ranking (the shallowest error says most), then an unknown key (often the misspelling of
        what else is missing), then the error written first."""
        depth, _, *rest = relevance(error)
        return (depth, error.validator == "additionalProperties", -self.line(tuple(error.absolute_path)), *rest)


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """A scalar as YAML reads it, except that digits with a leading zero and dates stay the text written.

    YAML 1.1 reads `mti: 0200` as octal 128 and `2024-05-01` as a date;
    whoever writes them means the text.
    """
    if node.tag == "tag:yaml.org,2002:timestamp" or (
            node.tag == "tag:yaml.org,2002:int" and re.fullmatch(r"0[0-9]+", node.value)):
        return node.value
    return loader.construct_object(node)


def _dotted(key: Key) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPES = {"string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
          "object": "a mapping", "array": "a list", "null": "nothing"}


def _explain(error: ValidationError) -> tuple[Key, str]:
    """The key to blame and a sentence for a schema error: jsonschema's own wording speaks of properties and
    instances; a tester wants the key and what was expected."""
    key: Key = tuple(error.absolute_path)
    instance, kind, schema_ = error.instance, error.validator, error.schema
    title = schema_.get("title") if isinstance(schema_, dict) else None
    if "propertyNames" in error.relative_schema_path:
        what = title or "one of: " + ", ".join(map(str, schema_.get("enum", ())))
        return key + (instance,), f"not a valid key here (expected {what})"
    if kind == "additionalProperties":
        known = list(schema_.get("properties", {}))
        extra = next(k for k in instance if k not in known)
        close = difflib.get_close_matches(extra, known, n=1)
        hint = f"did you mean {close[0]}?" if close else (f"expected one of: {', '.join(known)}" if known else "it takes none")
        return key + (extra,), f"unknown key ({hint})"
    if kind == "oneOf" and all(list(s) == ["required"] for s in error.validator_value):
        actions = [k for k in instance if k in ACTIONS]
        if not actions:
            return key, f"no action: a step needs exactly one of {', '.join(ACTIONS)}"
        return key + (actions[1],), f"a second action: the step already has {actions[0]}, and a step has exactly one"
    if kind == "required":
        missing = next(k for k in error.validator_value if k not in instance)
        return key, f"{missing} is missing (needed: {', '.join(error.validator_value)})"
    if kind == "enum":
        return key, f"{_describe(instance)} is not one of: {', '.join(map(str, error.validator_value))}"
    if kind == "const":
        return key, f"must be {json.dumps(error.validator_value)}, got {_describe(instance)}"
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        expected = title or " or ".join(_TYPES[t] for t in types)
        quote = " (quote it)" if "string" in types and isinstance(instance, (int, float)) and not isinstance(instance, bool) else ""
        return key, f"expected {expected}, got {_describe(instance)}{quote}"
    if title:
        return key, f"expected {title}, got {_describe(instance)}"
    return key, error.message


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a mapping of {', '.join(value)}" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)


class _Builder:
    """The checks a schema cannot make, over data the schema has passed, and the Scenario they produce."""

    def __init__(self, doc: _Document, path: Path, fixtures_dir: Path | None, default_dialect: str) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.path = path
        self.fixtures_dir = fixtures_dir
        self.default_dialect = default_dialect
        self.variables: dict[str, Any] = self.data.get("variables", {})

    def fail(self, key: Key, message: str) -> ScenarioError:
        return ScenarioError(message, self.doc.where(key))

    def scenario(self) -> Scenario:
        dialect = self._dialect() or self.default_dialect
        for name, value in self.variables.items():
            for used_key, name_used in _uses(value, ("variables", name)):
                raise self.fail(used_key, f"${{{name_used}}}: a variable cannot refer to another")
        terminals = self._terminals(dialect)
        steps = self._steps(list(terminals))
        needs: set[str] = set()
        if any(step.checks.journal for step in steps):
            needs.add("journal")
        if any(step.action == "wallet_pay" for step in steps):
            needs.add("http")
        if any(step.action in FINANCE_ACTIONS for step in steps):
            needs.add("finance")
        return Scenario(
            path=self.path, name=self.data.get("name", self.path.stem), description=self.data.get("description", ""),
            tags=tuple(self.data.get("tags", ())), dialect=dialect, terminals=terminals, variables=self.variables,
            steps=steps, needs=frozenset(needs),
        )

    def _dialect(self) -> str | None:
        """The scenario's dialect: a built-in name, or a dialect file found beside the scenario first."""
        name = self.data.get("dialect")
        if name is None:
            return None
        if name not in builtin_names() and not Path(name).is_absolute() and (self.path.parent / name).is_file():
            name = str(self.path.parent / name)
        try:
            load_dialect(name)
        except ValueError as exc:
            raise self.fail(("dialect",), str(exc)) from None
        return name

    def _terminals(self, dialect: str) -> dict[str, TerminalUse]:
        written = self.data.get("terminals", DEFAULT_TERMINALS)
        terminals = {}
        for alias, spec in written.items():
            tid, overrides = (spec, {}) if isinstance(spec, str) else (spec["tid"], {k: v for k, v in spec.items() if k != "tid"})
            try:
                load_profile(tid, self.fixtures_dir, dialect=dialect, **overrides)
            except (ProfileError, FixtureError) as exc:
                raise self.fail(("terminals", alias), str(exc)) from None
            terminals[alias] = TerminalUse(alias, tid, overrides)
        return terminals

    def _steps(self, aliases: list[str]) -> tuple[Step, ...]:
        written = self.data["steps"]
        captured_by: dict[str, int] = {}
        for index, raw in enumerate(written):
            for name in raw.get("capture", {}):
                captured_by.setdefault(name, index)
        captured: list[str] = []
        steps = []
        for index, raw in enumerate(written):
            own = list(raw.get("capture", {}))
            self._check_references(index, raw, captured, own, captured_by)
            steps.append(self._step(index, raw, aliases))
            captured += [name for name in own if name not in captured]
        return tuple(steps)

    def _check_references(self, index: int, raw: dict[str, Any], captured: list[str], own: list[str],
                          captured_by: dict[str, int]) -> None:
        """Every `${name}` of the step is a variable or an earlier step's capture; its `check`, run after its
        captures are taken, may use those too."""
        for name in own:
            if name in self.variables:
                raise self.fail(("steps", index, "capture", name), f"{name} is a variable; a capture cannot replace it")
        before = set(self.variables) | set(captured)
        for section, value in raw.items():
            defined = before | set(own) if section == "check" else before
            for key, name in _uses(value, ("steps", index, section)):
                if name in defined:
                    continue
                message = (f"${{{name}}} is not defined before this step (variables: {', '.join(self.variables) or 'none'};"
                           f" captured earlier: {', '.join(captured) or 'none'})")
                if name in own:
                    message += "; this step captures it after its answer: use it in its check or a later step"
                elif name in captured_by:
                    message += f"; step {captured_by[name] + 1} captures it later"
                raise self.fail(key, message)

    def _step(self, index: int, raw: dict[str, Any], aliases: list[str]) -> Step:
        key: Key = ("steps", index)
        action = next(k for k in raw if k in ACTIONS)
        args = self._args(key + (action,), action, raw[action])
        terminal = raw.get("terminal", aliases[0])
        if terminal not in aliases:
            raise self.fail(key + ("terminal",), f"no terminal {terminal!r} in this scenario (terminals: {', '.join(aliases)})")
        outcome = raw.get("outcome")
        if "error" in raw and outcome != "refused":
            raise self.fail(key + ("error",), "error is checked only with outcome: refused")
        if "expect" in raw and outcome not in (None, "answered"):
            raise self.fail(key + ("expect",), f"expect is on an answer, and outcome {outcome} has none")
        return Step(
            index=index + 1,
            name=raw.get("name", f"step {index + 1}"),
            terminal=terminal,
            action=action,
            args=args,
            fields={int(number): value for number, value in raw.get("fields", {}).items()},
            fault=self._fault(key + ("fault",), raw["fault"]) if "fault" in raw else None,
            outcome=outcome,
            error=self._matcher(key + ("error",), raw["error"]) if "error" in raw else None,
            expect=self._matchers(key + ("expect",), raw.get("expect", {}), _field_key, echo=True),
            result=self._matchers(key + ("result",), raw.get("result", {})),
            reversal=self._matchers(key + ("reversal",), raw.get("reversal", {}), _field_key, echo=True),
            capture={name: _source(source) for name, source in raw.get("capture", {}).items()},
            checks=self._checks(key + ("check",), raw.get("check", {})),
            at=self.doc.where(key),
        )

    def _args(self, key: Key, action: str, written: Any) -> dict[str, Any]:
        if action in ("raw", "raw_frame"):
            return {"hex": self._hex(key, written)}
        args = dict(written or {})
        if action == "qr_scan" and ("code" in args) == ("wallet" in args):
            raise self.fail(key, "qr_scan needs exactly one of code (a payment code) or wallet (an account that shows one)")
        if "card" in args:
            self._card(key + ("card",), args["card"])
        if "wallet" in args:
            self._wallet(key + ("wallet",), args["wallet"])
        return args

    def _known(self, value: str) -> str | None:
        """`value` with its references filled in when they are all variables (known now); None when a capture
        decides it at run time."""
        return substitute(value, self.variables) if references(value) <= set(self.variables) else None

    @cached_property
    def cards(self) -> dict[str, Card]:
        """cards.yaml, read once for every card a scenario names."""
        return fixture_cards(self.fixtures_dir)

    def _card(self, key: Key, written: str) -> None:
        text = self._known(written)
        if text is None:
            return
        try:
            cards = self.cards
            if str(text).strip() in cards:
                return
            card = resolve_card(str(text), cards=cards)
        except (CardError, FixtureError) as exc:
            raise self.fail(key, str(exc)) from None
        if card.name not in cards and luhn_digit(card.pan[:-1]) != card.pan[-1]:
            raise self.fail(key, f"PAN {mask_pan(card.pan)} fails the Luhn check; for a bad PAN name a card of cards.yaml")

    def _wallet(self, key: Key, written: str) -> None:
        name = self._known(written)
        if name is None:
            return
        try:
            login(str(name), self.fixtures_dir)
        except (WalletAppError, FixtureError) as exc:
            raise self.fail(key, str(exc)) from None

    def _hex(self, key: Key, written: str) -> str:
        digits = "".join(written.split())
        if not digits:
            raise self.fail(key, "no hex: a frame needs at least one byte")
        bad = next((i for i, char in enumerate(digits) if char not in hexdigits), None)
        if bad is not None:
            raise self.fail(key, f"not hex: {digits[bad]!r} at offset {bad} of the hex digits (byte {bad // 2})")
        if len(digits) % 2:
            raise self.fail(key, f"{len(digits)} hex digits: a byte takes two, so the count must be even")
        return digits

    def _fault(self, key: Key, written: dict[str, Any]) -> Fault:
        ((kind, value),) = written.items()
        return Fault(kind, float(value) if kind == "delay" else 0.0, self.doc.where(key + (kind,)))

    def _matchers(self, key: Key, written: dict[str, Any], name: Callable[[str], str] = str, *,
                  echo: bool = False) -> dict[str, Matcher]:
        return {name(k): self._matcher(key + (k,), value, echo=echo) for k, value in written.items()}

    def _matcher(self, key: Key, written: Any, *, echo: bool = False) -> Matcher:
        """`echo` is allowed only on an answer's fields: it compares them with the request's."""
        at = self.doc.where(key)
        if isinstance(written, dict):
            ((kind, value),) = written.items()
            if kind == "matches":
                try:
                    re.compile(written["matches"])
                except re.error as exc:
                    raise self.fail(key + ("matches",), f"not a regular expression: {exc}") from None
            return Matcher(kind, value, at)
        if written in ("present", "absent", "echo") and isinstance(written, str):
            if written == "echo" and not echo:
                raise self.fail(key, "echo compares an answer's field with the request's: only in expect and reversal")
            return Matcher(written, None, at)
        return Matcher("equals", written, at)

    def _checks(self, key: Key, written: dict[str, Any]) -> Checks:
        journal = tuple(
            JournalCheck(
                where=row["where"], count=row.get("count"),
                expect=self._matchers(key + ("journal", i, "expect"), row.get("expect", {})),
                at=self.doc.where(key + ("journal", i)),
            )
            for i, row in enumerate(written.get("journal", ()))
        )
        return Checks(journal=journal, terminal=self._matchers(key + ("terminal",), written.get("terminal", {})),
                      batch=self._matchers(key + ("batch",), written.get("batch", {})))


def _uses(value: Any, key: Key) -> Iterator[tuple[Key, str]]:
    """Each `${name}` in `value` with the key it is written under, in the order written."""
    if isinstance(value, str):
        for name in sorted(references(value), key=lambda n: value.index(f"${{{n}}}")):
            yield key, name
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _uses(item, key + (i,))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _uses(item, key + (k,))


def _field_key(written: str) -> str:
    """"mti", or a field number as text without leading zeros ("039" → "39")."""
    return written if written == "mti" else str(int(written))


def _source(written: str) -> str:
    """A capture source with its field number written plainly: "037" → "37", "request.011" → "request.11"."""
    if written.startswith("result."):
        return written
    prefix, _, number = written.rpartition(".")
    return f"{prefix}.{int(number)}" if prefix else str(int(number))
