"""A dialect is data: a pyiso8583 spec plus framing defaults, a MAC scheme
name, field-60-style subfields and the few conventions where ISO 8583
flavours differ. Built-ins live in `wire/dialects/*.yaml`; a user's YAML file
in the same format works everywhere a built-in name does.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .framing import LENGTH_KINDS, Framing
from .message import Message
from .transactions import TransactionKind, parse_transactions

_FIELD_KEYS = {"data_enc", "len_enc", "len_type", "max_len", "desc", "len_count", "left_pad", "right_pad", "type"}
_REQUIRED_KEYS = {"data_enc", "len_enc", "len_type", "max_len"}
_FIELD_TYPES = {"n", "an", "ans", "b", "z", "ns", "xn"}
_RESPONSE_DEFAULTS = {"terminal_unknown": "58", "not_signed_on": "58", "mac_error": "63", "batch_closed": "80",
                      "out_of_balance": "95"}


class DialectError(ValueError):
    """A dialect file that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class Subfield:
    name: str
    length: int


@dataclass(frozen=True)
class Dialect:
    name: str
    description: str
    spec: dict[str, dict[str, Any]]
    framing: Framing
    mac_scheme: str | None = None
    subfields: dict[int, tuple[Subfield, ...]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    """Where a role lives: "70" for a whole field, "60.3" for a subfield."""
    conventions: dict[str, Any] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)
    transactions: dict[str, TransactionKind] = field(default_factory=dict)
    """The POS transaction set: kind -> its MTI, processing code, condition code (docs/transactions.md)."""
    source: str = ""

    def field_name(self, number: int) -> str:
        return str(self.spec.get(str(number), {}).get("desc", ""))

    def response_code(self, situation: str) -> str:
        """The response code this dialect uses for a host situation such as `not_signed_on`."""
        return self.responses.get(situation, _RESPONSE_DEFAULTS[situation])

    def convention(self, name: str, default: Any = None) -> Any:
        return self.conventions.get(name, default)

    def transaction(self, name: str) -> TransactionKind:
        kind = self.transactions.get(name)
        if kind is None:
            raise KeyError(f"dialect {self.name} has no transaction {name!r} (it has {', '.join(self.transactions)})")
        return kind

    def transaction_of(self, message: Message) -> TransactionKind | None:
        """The kind of a request, by MTI class, processing code and condition code (field 25, 00 when absent)."""
        return self._kinds_by_key.get((message.mti[1:3], message.get(3) or "", message.get(25) or "00"))

    @cached_property
    def _kinds_by_key(self) -> dict[tuple[str, str, str], TransactionKind]:
        """Built once: every financial request asks (parse_transactions made the keys unique)."""
        return {kind.key: kind for kind in self.transactions.values()}

    def split(self, number: int, value: str) -> dict[str, str]:
        """Cut a field with declared subfields into named parts; a short value yields fewer parts."""
        parts = {}
        at = 0
        for sub in self.subfields.get(number, ()):
            if at >= len(value):
                break
            parts[sub.name] = value[at : at + sub.length]
            at += sub.length
        return parts

    def get_role(self, message: Message, role: str) -> str | None:
        """The value a role has in a message, wherever this dialect keeps it."""
        where = self.roles.get(role)
        if where is None:
            return None
        number, _, sub = where.partition(".")
        value = message.get(int(number))
        if value is None or not sub:
            return value
        name = self.subfields[int(number)][int(sub) - 1].name
        return self.split(int(number), value).get(name)

    def set_role(self, message: Message, role: str, value: str) -> bool:
        """Put a role's value where this dialect keeps it; False when the dialect has no such role.

        Setting a subfield keeps the others and zero-fills earlier ones that
        were absent, so `set_role(m, "network_code", "001")` on an empty
        field 60 gives 00 000000 001.
        """
        where = self.roles.get(role)
        if where is None:
            return False
        number, _, sub = where.partition(".")
        if not sub:
            message[int(number)] = value
            return True
        subs = self.subfields[int(number)]
        index = int(sub) - 1
        if len(value) != subs[index].length:
            raise ValueError(f"{role} {value!r} must be {subs[index].length} characters for field {where}")
        current = message.get(int(number)) or ""
        parts, at = [], 0
        for s in subs:
            parts.append(current[at : at + s.length])
            at += s.length
        for i in range(index):
            parts[i] = parts[i].ljust(subs[i].length, "0")
        parts[index] = value
        # Subfields this dialect does not declare (CUP 60.6, 60.7 …) stay as they were.
        message[int(number)] = "".join(parts) + current[at:]
        return True


def builtin_names() -> list[str]:
    folder = resources.files(__package__) / "dialects"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


@cache
def load_dialect(name_or_path: str) -> Dialect:
    """A built-in dialect by name, or a dialect YAML file by path."""
    raw, source = _read(name_or_path)
    return _build(raw, source, (source,))


def _read(name_or_path: str) -> tuple[dict[str, Any], str]:
    if name_or_path in builtin_names():
        resource = resources.files(__package__) / "dialects" / f"{name_or_path}.yaml"
        text, source = resource.read_text(encoding="utf-8"), f"built-in {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DialectError(
                f"no dialect {name_or_path!r}: not a built-in ({', '.join(builtin_names())}) and no such file"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise DialectError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise DialectError(f"{source}: a dialect file must be a mapping")
    return raw, source


_TOP_KEYS = {"name", "description", "base", "framing", "mac", "subfields", "roles", "conventions", "responses", "fields",
             "transactions"}


def _build(raw: dict[str, Any], source: str, chain: tuple[str, ...]) -> Dialect:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise DialectError(f"{source}: unknown key {sorted(unknown)[0]!r} (expected {', '.join(sorted(_TOP_KEYS))})")
    base = _base(raw, source, chain) if "base" in raw else None
    name = _require(raw, "name", str, source)
    spec = {k: dict(v) for k, v in base.spec.items()} if base else {}
    for key, entry in _mapping(raw, "fields", source).items():
        spec[str(key)] = _field_spec(str(key), entry, source)
    for key in ("h", "t", "p"):
        if key not in spec:
            raise DialectError(f"{source}: fields.{key} is missing (header, MTI and primary bitmap are required)")
    spec.setdefault("1", dict(spec["p"], desc="Bitmap, secondary"))
    subfields = _subfields(raw.get("subfields"), base.subfields if base else {}, source)
    roles = {**(base.roles if base else {}), **{str(k): str(v) for k, v in _mapping(raw, "roles", source).items()}}
    for role, where in roles.items():
        _check_role(role, where, spec, subfields, source)
    mac = raw.get("mac", base.mac_scheme if base else None)
    if mac is not None and not isinstance(mac, str):
        raise DialectError(f"{source}: mac must be a scheme name such as cup-ecb")
    return Dialect(
        name=name,
        description=str(raw.get("description", base.description if base else "")),
        spec=spec,
        framing=_framing(raw.get("framing"), base.framing if base else Framing(), source),
        mac_scheme=mac,
        subfields=subfields,
        roles=roles,
        conventions={**(base.conventions if base else {}), **_mapping(raw, "conventions", source)},
        responses={**(base.responses if base else {}), **_responses(raw, source)},
        transactions=_transactions(raw, base, source),
        source=source,
    )


def _transactions(raw: dict[str, Any], base: Dialect | None, source: str) -> dict[str, TransactionKind]:
    try:
        return parse_transactions(raw.get("transactions"), base.transactions if base else {}, source)
    except ValueError as exc:
        raise DialectError(str(exc)) from None


def _responses(raw: dict[str, Any], source: str) -> dict[str, str]:
    """Response codes for host situations: two characters, as field 39 holds them."""
    responses = {}
    for situation, code in _mapping(raw, "responses", source).items():
        if situation not in _RESPONSE_DEFAULTS:
            raise DialectError(
                f"{source}: responses.{situation} is not a situation ({', '.join(sorted(_RESPONSE_DEFAULTS))})"
            )
        if not isinstance(code, str) or not re.fullmatch(r"[0-9A-Z]{2}", code):
            raise DialectError(f"{source}: responses.{situation} {code!r} must be a 2-character response code, quoted")
        responses[situation] = code
    return responses


def _base(raw: dict[str, Any], source: str, chain: tuple[str, ...]) -> Dialect:
    """The dialect a file builds on: a built-in name, or a path relative to the file itself."""
    base = str(raw["base"])
    if base in builtin_names():
        return load_dialect(base)
    path = Path(base)
    if not path.is_absolute() and not source.startswith("built-in "):
        path = Path(source).parent / path
    if str(path) in chain:
        raise DialectError(f"{source}: base {base!r} leads back to itself")
    if not path.is_file():
        raise DialectError(
            f"{source}: base {base!r} is not a built-in ({', '.join(builtin_names())}) and there is no file {path}"
        )
    base_raw, base_source = _read(str(path))
    return _build(base_raw, base_source, (*chain, base_source))


def _require(raw: dict[str, Any], key: str, kind: type, source: str) -> Any:
    if key not in raw:
        raise DialectError(f"{source}: {key} is missing")
    if not isinstance(raw[key], kind):
        raise DialectError(f"{source}: {key} must be a {kind.__name__}")
    return raw[key]


def _mapping(raw: dict[str, Any], key: str, source: str) -> dict[Any, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DialectError(f"{source}: {key} must be a mapping")
    return value


def _field_spec(key: str, entry: Any, source: str) -> dict[str, Any]:
    where = f"{source}: fields.{key}"
    if not isinstance(entry, dict):
        raise DialectError(f"{where} must be a mapping")
    if key not in ("h", "t", "p", "1") and not (key.isdigit() and 2 <= int(key) <= 128):
        raise DialectError(f"{where}: field keys are h, t, p, 1 or 2..128")
    unknown = set(entry) - _FIELD_KEYS
    if unknown:
        raise DialectError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    missing = _REQUIRED_KEYS - set(entry)
    if missing:
        raise DialectError(f"{where}: missing {sorted(missing)[0]!r}")
    if entry.get("type", "ans") not in _FIELD_TYPES:
        raise DialectError(f"{where}.type: {entry['type']!r} is not one of {', '.join(sorted(_FIELD_TYPES))}")
    if type(entry["max_len"]) is not int or entry["max_len"] < 0:
        raise DialectError(f"{where}.max_len: must be a whole number")
    if type(entry["len_type"]) is not int or not 0 <= entry["len_type"] <= 3:
        raise DialectError(f"{where}.len_type: must be 0 (fixed), 1 (LLVAR), 2 (LLLVAR) or 3 bytes of length")
    if not _is_encoding(entry["data_enc"], ("b",)):
        raise DialectError(f"{where}.data_enc: {entry['data_enc']!r} is not b or a text encoding such as ascii")
    if not _is_encoding(entry["len_enc"], ("b", "bcd")):
        raise DialectError(f"{where}.len_enc: {entry['len_enc']!r} is not b, bcd or a text encoding such as ascii")
    if entry.get("len_count", "bytes") not in ("bytes", "nibbles"):
        raise DialectError(f"{where}.len_count: {entry['len_count']!r} is not bytes or nibbles")
    for pad in ("left_pad", "right_pad"):
        if pad in entry and not (isinstance(entry[pad], str) and len(entry[pad]) == 1):
            raise DialectError(f"{where}.{pad}: must be one character (quote digits: '0')")
    odd_possible = entry["len_type"] > 0 or entry["max_len"] % 2 == 1
    packed_digits = entry["data_enc"] == "b" and entry.get("len_count") == "nibbles"
    if packed_digits and odd_possible and not ("left_pad" in entry or "right_pad" in entry):
        raise DialectError(f"{where}: packed digits of odd length need left_pad or right_pad")
    return dict(entry)


def _is_encoding(value: Any, special: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    if value in special:
        return True
    try:
        codecs.lookup(value)
    except LookupError:
        return False
    return True


def _check_role(role: str, where: str, spec: dict[str, Any], subfields: dict[int, tuple[Subfield, ...]], source: str) -> None:
    number, _, sub = where.partition(".")
    ok = number.isdigit() and number in spec
    if ok and sub:
        ok = sub.isdigit() and 1 <= int(sub) <= len(subfields.get(int(number), ()))
    if not ok:
        raise DialectError(
            f"{source}: roles.{role}: {where!r} is not a field of this dialect or a declared subfield such as 60.3"
        )


def _framing(raw: Any, base: Framing, source: str) -> Framing:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise DialectError(f"{source}: framing must be a mapping")
    unknown = set(raw) - {"length", "length_includes_header", "tpdu", "header"}
    if unknown:
        raise DialectError(f"{source}: framing.{sorted(unknown)[0]} is not a framing setting")
    length = raw.get("length", base.length)
    if length not in LENGTH_KINDS:
        raise DialectError(f"{source}: framing.length {length!r} is not one of {', '.join(LENGTH_KINDS)}")
    includes = raw.get("length_includes_header", base.length_includes_header)
    if not isinstance(includes, bool):
        raise DialectError(f"{source}: framing.length_includes_header must be true or false")
    tpdu = _hex_setting(raw, "tpdu", base.tpdu, source)
    header = _hex_setting(raw, "header", base.header, source)
    try:
        return Framing(length, includes, tpdu or None, header or b"")
    except ValueError as exc:
        raise DialectError(f"{source}: framing.tpdu: {exc}") from None


def _hex_setting(raw: dict[str, Any], key: str, default: bytes | None, source: str) -> bytes | None:
    if key not in raw:
        return default
    value = raw[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DialectError(f"{source}: framing.{key} must be a quoted hex string such as \"6000000000\"")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DialectError(f"{source}: framing.{key} {value!r} is not hex") from None


def _subfields(raw: Any, base: dict[int, tuple[Subfield, ...]], source: str) -> dict[int, tuple[Subfield, ...]]:
    if raw is not None and not isinstance(raw, dict):
        raise DialectError(f"{source}: subfields must be a mapping of field number to [name, length] pairs")
    result = dict(base)
    for key, parts in (raw or {}).items():
        try:
            result[int(key)] = tuple(Subfield(str(n), int(length)) for n, length in parts)
        except (TypeError, ValueError):
            raise DialectError(f"{source}: subfields.{key} must be a list of [name, length] pairs") from None
    return result
