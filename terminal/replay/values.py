"""`${name}` references in scenario values: which names a value uses, and the value with them filled in."""

from __future__ import annotations

import re
from typing import Any

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def references(value: Any) -> set[str]:
    """Every name `value` refers to, looking into lists and mappings."""
    if isinstance(value, str):
        return set(REFERENCE.findall(value))
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    return set()


def substitute(value: Any, env: dict[str, Any]) -> Any:
    """`value` with each reference replaced by its value in `env`.

    A string that is exactly one reference takes the referenced value itself,
    so an amount captured as a number stays a number; inside a longer string
    a value is written as text. A name missing from `env` raises KeyError
    (the loader makes sure none is by the time its step runs).
    """
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return env[whole.group(1)]
        return REFERENCE.sub(lambda m: str(env[m.group(1)]), value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value
