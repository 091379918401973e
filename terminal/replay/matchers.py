"""A scenario's matchers (docs/replay.md, "Matchers"): does a value meet one, and if not, the line that says why.

One rule for equality everywhere: text equals text; a number written in the
scenario equals a value of digits that reads as that number (so `amount:
1250` meets the journal's 1250 and field 4's 000000001250 alike); anything
else compares as the typed values it is, a boolean only ever equalling a boolean.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .model import Matcher
from .values import substitute

_INTEGER = re.compile(r"-?[0-9]+\Z")


def check(matcher: Matcher, actual: Any, *, request_value: Any = None, present: bool, env: dict[str, Any]) -> str | None:
    """None when `actual` meets `matcher`, else one line: `expected '00', got '51'`.

    `present` says whether the value is there at all (`actual` is then
    ignored when it is not); `request_value` is the request's same field,
    for `echo`; references in the matcher's value are filled from `env`.
    """
    if _meets(matcher, actual if present else None, request_value, present, env):
        return None
    return f"expected {expected_text(matcher, env, request_value)}, got {actual_text(actual, present)}"


def _meets(matcher: Matcher, actual: Any, request_value: Any, present: bool, env: dict[str, Any]) -> bool:
    kind = matcher.kind
    if kind == "present":
        return present
    if kind == "absent":
        return not present
    if kind == "echo":
        return present and request_value is not None and equal(request_value, actual)
    value = substitute(matcher.value, env)
    if kind == "matches":
        return present and re.search(str(value), _text(actual)) is not None
    if kind == "one_of":
        return any(equal(option, actual) for option in value)
    return equal(value, actual)


def equal(expected: Any, actual: Any) -> bool:
    """Whether a value written in a scenario equals one that came (the module's rule)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(actual, str) and not isinstance(expected, str) and expected is not None:
        if str(expected) == actual:
            return True
    if isinstance(expected, int) and isinstance(actual, str) and _INTEGER.match(actual):
        return int(actual) == expected
    if isinstance(actual, int) and isinstance(expected, str) and _INTEGER.match(expected):
        return int(expected) == actual
    return bool(expected == actual)


def expected_text(matcher: Matcher, env: dict[str, Any], request_value: Any = None) -> str:
    """What the matcher asks for, as a failure shows it."""
    if matcher.kind in ("present", "absent"):
        return matcher.kind
    if matcher.kind == "echo":
        if request_value is None:
            return "an echo of a field the request lacks"
        return f"{shown(request_value)} (the request's)"
    value = substitute(matcher.value, env)
    if matcher.kind == "matches":
        return f"a match of /{value}/"
    if matcher.kind == "one_of":
        return "one of " + ", ".join(shown(option) for option in value)
    return shown(value)


def actual_text(actual: Any, present: bool) -> str:
    return shown(actual) if present else "absent"


def shown(value: Any) -> str:
    """A value as YAML would write it: text quoted, null, true/false, numbers bare."""
    if isinstance(value, str):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return repr(value)


def walk(data: Any, dotted: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key (`reversal.acknowledged`, `open_batch.transactions.0.rrn`) in nested
    dicts and lists; a key whose value is null counts as absent."""
    value = data
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return value is not None, value


def _text(value: Any) -> str:
    """What a regular expression is searched in: text as it is, anything else as YAML writes it."""
    return value if isinstance(value, str) else shown(value)
