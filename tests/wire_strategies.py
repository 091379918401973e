"""Hypothesis strategies that build ISO 8583 messages from a dialect's own spec.

Values are generated from each field's type, length and encoding, so a
round trip exercises every field definition of every dialect, not a
hand-picked sample.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st

from possim.wire.dialect import Dialect
from possim.wire.message import Message

DATA_FIELDS = [n for n in range(2, 129) if n != 65]
"""Field 65 is excluded: pyiso8583 treats its bit as a tertiary-bitmap flag, and the codec refuses it."""

PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
DIGITS = "0123456789"
HANZI = "中国银联商户北京上海广州深圳便利店超市餐厅支付终端测试"
"""Characters that GBK encodes in two bytes each."""


def _sized(entry: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Raw bytes as long as the value: fixed fields exactly, variable ones mostly short, sometimes the maximum.

    Values are derived from one `binary` draw each, which keeps generation
    cheap enough for a few hundred examples per dialect in a few seconds.
    """
    max_len = entry["max_len"]
    if entry["len_type"] == 0:
        return st.binary(min_size=max_len, max_size=max_len)
    return st.one_of(st.binary(max_size=min(max_len, 24)), st.binary(min_size=max_len, max_size=max_len))


def _spell(alphabet: str) -> Callable[[bytes], str]:
    return lambda raw: "".join(alphabet[b % len(alphabet)] for b in raw)


def _gbk(raw: bytes) -> str:
    """Text whose GBK encoding is exactly len(raw) bytes: a mix of two-byte hanzi and ASCII."""
    out, budget = [], len(raw)
    for b in raw:
        if budget >= 2 and b % 3 == 0:
            out.append(HANZI[b // 3 % len(HANZI)])
            budget -= 2
        elif budget >= 1:
            out.append(PRINTABLE[b % len(PRINTABLE)])
            budget -= 1
    return "".join(out)


def field_value(entry: dict[str, Any]) -> st.SearchStrategy[str]:
    """Values a field may carry: digits for n, tracks with D (or = in text) for z, hex for b …"""
    kind = entry.get("type", "ans")
    packed = entry["data_enc"] == "b"
    raw = _sized(entry)
    if kind == "b":
        return raw.map(lambda r: r.hex().upper())
    if kind == "n":
        return raw.map(_spell(DIGITS))
    if kind == "z":
        return raw.map(_spell(DIGITS + ("D" if packed else "D=")))
    if kind == "xn":
        return raw.map(lambda r: "CD"[r[0] % 2] + _spell(DIGITS)(r[1:]))
    if entry["data_enc"] == "gbk":
        return raw.map(_gbk)
    return raw.map(_spell(PRINTABLE))


_STRATEGIES: dict[str, dict[int, st.SearchStrategy[str]]] = {}


def _field_strategies(dialect: Dialect) -> dict[int, st.SearchStrategy[str]]:
    if dialect.source not in _STRATEGIES:
        _STRATEGIES[dialect.source] = {n: field_value(dialect.spec[str(n)]) for n in DATA_FIELDS}
    return _STRATEGIES[dialect.source]


@st.composite
def messages(draw: st.DrawFn, dialect: Dialect, required: tuple[int, ...] = (), max_fields: int = 14) -> Message:
    """A message of any MTI with a random subset of fields 2..128, each valid for `dialect`."""
    values = _field_strategies(dialect)
    mti = draw(st.binary(min_size=4, max_size=4).map(_spell(DIGITS)))
    numbers = draw(st.sets(st.sampled_from(DATA_FIELDS), max_size=max_fields)) | set(required)
    return Message(mti, {n: draw(values[n]) for n in sorted(numbers)})


def luhn_pan(body: str) -> str:
    """`body` plus its Luhn check digit (test PANs look like real ones)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)
