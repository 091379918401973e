"""`possim replay -k EXPR`: which scenarios run, by name and tag.

The grammar is pytest's `-k`, so a QA engineer's habit carries over:

    expr := term ("or" term)*
    term := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | WORD

A WORD selects a scenario whose name contains it or that has it as a tag,
both ignoring case. `and`, `or` and `not` are the operators only in lower
case, as in pytest. A syntax error names its column (1-based) in EXPR.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from .model import Scenario

Predicate = Callable[[Scenario], bool]

_TOKEN = re.compile(r"[()]|[^\s()]+")


def select(scenarios: Sequence[Scenario], expr: str | None) -> list[Scenario]:
    """The scenarios `expr` selects, in their order; every one when `expr` is None or blank.
    Raises ValueError naming the column of a syntax error."""
    if expr is None or not expr.strip():
        return list(scenarios)
    predicate = _Parser(expr).parse()
    return [s for s in scenarios if predicate(s)]


def _word(word: str) -> Predicate:
    folded = word.casefold()
    return lambda s: folded in s.name.casefold() or any(folded == tag.casefold() for tag in s.tags)


class _Parser:
    """Recursive descent over the tokens of one expression, building the predicate as it goes."""

    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(expr)]
        """(token, 0-based offset in expr)."""
        self.next = 0

    def parse(self) -> Predicate:
        predicate = self._expr()
        if self.next < len(self.tokens):
            token, at = self.tokens[self.next]
            raise self._error(f"unexpected {token!r}", at)
        return predicate

    def _peek(self) -> str | None:
        return self.tokens[self.next][0] if self.next < len(self.tokens) else None

    def _expr(self) -> Predicate:
        parts = [self._term()]
        while self._peek() == "or":
            self.next += 1
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else (lambda s: any(p(s) for p in parts))

    def _term(self) -> Predicate:
        parts = [self._factor()]
        while self._peek() == "and":
            self.next += 1
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else (lambda s: all(p(s) for p in parts))

    def _factor(self) -> Predicate:
        if self.next >= len(self.tokens):
            raise self._error("expected a word, 'not' or '(' but the expression ended", len(self.expr))
        token, at = self.tokens[self.next]
        self.next += 1
        if token == "not":
            inner = self._factor()
            return lambda s: not inner(s)
        if token == "(":
            inner = self._expr()
            if self._peek() != ")":
                where = self.tokens[self.next][1] if self.next < len(self.tokens) else len(self.expr)
                raise self._error(f"the '(' at column {at + 1} is not closed", where)
            self.next += 1
            return inner
        if token in (")", "and", "or"):
            raise self._error(f"expected a word, 'not' or '(' but found {token!r}", at)
        return _word(token)

    def _error(self, message: str, at: int) -> ValueError:
        return ValueError(f"-k {self.expr!r}: column {at + 1}: {message}")
