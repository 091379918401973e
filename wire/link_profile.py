"""A serial link profile is data: how an ECR or terminal frames bytes on a
serial line (STX, optional length field, ETX, XOR check byte), which control
bytes it answers with, its retry limits and timers, and its line settings.

Vendors differ in small ways — whether the check byte covers STX, whether it
starts from 0x00 or 0x7F, whether a length follows STX — so those are fields
here, not code. Built-ins live in `wire/link_profiles/*.yaml`; a user's YAML
file in the same format (optionally `base:` a built-in) works wherever a
built-in name does.

A 7-bit link (bytesize 7, e.g. 7E1) carries text only: a binary ISO 8583
dialect cannot cross it, and `serial_frames.check_payload_fits` refuses such
data before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

LINK_LENGTH_KINDS: tuple[str, ...] = ("none", "binary2", "bcd2", "ascii4")
LRC_COVERS: tuple[str, ...] = ("after_stx", "all", "data")
_BYTE_KEYS = ("stx", "etx", "ack", "nak", "eot", "enq")


class LinkProfileError(ValueError):
    """A link profile that cannot be used; the message names file and key (and line when known).

    `key` is the profile setting at fault, when there is one.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class LinkProfile:
    name: str
    description: str = ""
    stx: int = 0x02
    etx: int = 0x03
    length: str = "none"
    """Length of the data field right after STX: none, binary2, bcd2 or ascii4."""
    lrc_start: int = 0x00
    """XOR start value (some vendors use 0x7F)."""
    lrc_covers: str = "after_stx"
    """after_stx: length+data+ETX; all: STX..ETX; data: data only."""
    ack: int = 0x06
    nak: int = 0x15
    eot: int = 0x04
    enq: int = 0x05
    use_enq: bool = False
    """The sender opens each exchange with ENQ and waits for ACK."""
    retries: int = 3
    """Retransmissions after a NAK or a missing ACK, then EOT and failure."""
    ack_timeout: float = 2.0
    response_timeout: float = 30.0
    inter_byte_timeout: float = 1.0
    """A frame that stops arriving mid-way is dropped after this (a session timer, not pyserial's)."""
    baud: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    iso_length_header: bool = False
    """True: the data is the ISO 8583 frame with its dialect length header; False: without."""

    def __post_init__(self) -> None:
        _check_types(self)
        controls = {key: getattr(self, key) for key in _BYTE_KEYS}
        seen: dict[int, str] = {}
        for key, value in controls.items():
            if value in seen:
                raise LinkProfileError(f"{key} 0x{value:02X} is the same byte as {seen[value]}", key)
            seen[value] = key
        if self.bytesize == 7:
            # Every byte on a 7-bit line must be < 0x80, including length and check bytes.
            for key in (*_BYTE_KEYS, "lrc_start"):
                if getattr(self, key) > 0x7F:
                    raise LinkProfileError(f"{key} 0x{getattr(self, key):02X} does not fit a 7-bit link", key)
            if self.length not in ("none", "ascii4"):
                raise LinkProfileError(f"length {self.length} sends binary bytes; a 7-bit link needs none or ascii4",
                                       "length")


def _check_types(profile: LinkProfile) -> None:
    if not isinstance(profile.name, str) or not profile.name:
        raise LinkProfileError("name must be a non-empty string", "name")
    if not isinstance(profile.description, str):
        raise LinkProfileError("description must be a string", "description")
    for key in (*_BYTE_KEYS, "lrc_start"):
        value = getattr(profile, key)
        if type(value) is not int or not 0 <= value <= 0xFF:
            raise LinkProfileError(f"{key} {value!r} must be a byte value such as 0x02", key)
    if profile.length not in LINK_LENGTH_KINDS:
        raise LinkProfileError(f"length {profile.length!r} is not one of {', '.join(LINK_LENGTH_KINDS)}", "length")
    if profile.lrc_covers not in LRC_COVERS:
        raise LinkProfileError(f"lrc_covers {profile.lrc_covers!r} is not one of {', '.join(LRC_COVERS)}",
                               "lrc_covers")
    for key in ("use_enq", "iso_length_header"):
        if not isinstance(getattr(profile, key), bool):
            raise LinkProfileError(f"{key} must be true or false", key)
    if type(profile.retries) is not int or profile.retries < 0:
        raise LinkProfileError(f"retries {profile.retries!r} must be a whole number, 0 or more", "retries")
    for key in ("ack_timeout", "response_timeout", "inter_byte_timeout"):
        value = getattr(profile, key)
        if type(value) not in (int, float) or not value > 0:
            raise LinkProfileError(f"{key} {value!r} must be a number of seconds above 0", key)
    if type(profile.baud) is not int or profile.baud <= 0:
        raise LinkProfileError(f"baud {profile.baud!r} must be a positive whole number", "baud")
    if profile.bytesize not in (7, 8) or type(profile.bytesize) is not int:
        raise LinkProfileError(f"bytesize {profile.bytesize!r} must be 7 or 8", "bytesize")
    if profile.parity not in ("N", "E", "O"):
        raise LinkProfileError(f"parity {profile.parity!r} must be N, E or O", "parity")
    if type(profile.stopbits) not in (int, float) or profile.stopbits not in (1, 1.5, 2):
        raise LinkProfileError(f"stopbits {profile.stopbits!r} must be 1, 1.5 or 2", "stopbits")


_KEYS = {f.name for f in fields(LinkProfile)}
_TOP_KEYS = _KEYS | {"base"}


def builtin_link_profiles() -> list[str]:
    folder = resources.files(__package__) / "link_profiles"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_link_profile(name_or_path: str) -> LinkProfile:
    """A built-in link profile by name, or a link profile YAML file by path.

    Built-ins are cached; a file is read again each time so edits take effect.
    """
    if name_or_path in builtin_link_profiles():
        return _load_builtin(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise LinkProfileError(
            f"no link profile {name_or_path!r}: not a built-in ({', '.join(builtin_link_profiles())}) and no such file"
        )
    return _build(str(path), (str(path),))


@cache
def _load_builtin(name: str) -> LinkProfile:
    return _build(name, (f"built-in {name}",))


def _read(name_or_path: str) -> tuple[dict[str, Any], dict[str, int], str]:
    """The mapping in a profile file, the line of each top-level key, and the source to name in errors."""
    if name_or_path in builtin_link_profiles():
        resource = resources.files(__package__) / "link_profiles" / f"{name_or_path}.yaml"
        text, source = resource.read_text(encoding="utf-8"), f"built-in {name_or_path}"
    else:
        text, source = Path(name_or_path).read_text(encoding="utf-8"), name_or_path
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise LinkProfileError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict) or not isinstance(node, yaml.MappingNode):
        raise LinkProfileError(f"{source}: a link profile file must be a mapping")
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    return raw, lines, source


def _build(name_or_path: str, chain: tuple[str, ...]) -> LinkProfile:
    raw, lines, source = _read(name_or_path)

    def where(key: str) -> str:
        return f"{source} line {lines[key]}" if key in lines else source

    for key in raw:
        if key not in _TOP_KEYS:
            raise LinkProfileError(
                f"{where(str(key))}: unknown key {key!r} (expected {', '.join(sorted(_TOP_KEYS))})", str(key)
            )
    if "name" not in raw:
        raise LinkProfileError(f"{source}: name is missing", "name")
    values: dict[str, Any] = {}
    if "base" in raw:
        base = _base(raw["base"], source, where("base"), chain)
        values = {f.name: getattr(base, f.name) for f in fields(LinkProfile)}
    values.update({key: value for key, value in raw.items() if key != "base"})
    try:
        return LinkProfile(**values)
    except LinkProfileError as exc:
        raise LinkProfileError(f"{where(exc.key) if exc.key else source}: {exc}", exc.key) from None


def _base(base: Any, source: str, where: str, chain: tuple[str, ...]) -> LinkProfile:
    """The profile a file builds on: a built-in name, or a path relative to the file itself."""
    if not isinstance(base, str):
        raise LinkProfileError(f"{where}: base must be a built-in name or a file path", "base")
    if base in builtin_link_profiles():
        return _load_builtin(base)
    path = Path(base)
    if not path.is_absolute() and not source.startswith("built-in "):
        path = Path(source).parent / path
    if str(path) in chain:
        raise LinkProfileError(f"{where}: base {base!r} leads back to itself", "base")
    if not path.is_file():
        raise LinkProfileError(
            f"{where}: base {base!r} is not a built-in ({', '.join(builtin_link_profiles())})"
            f" and there is no file {path}",
            "base",
        )
    return _build(str(path), (*chain, str(path)))
