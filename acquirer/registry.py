"""Who may call the host: the merchants it acquires for and their terminals.

Read once from `merchants.yaml` and `terminals.yaml`; the host answers a
terminal it does not know with the dialect's `terminal_unknown` code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.hsm_mock.dukpt_setup import DukptSetupError, parse_dukpt
from possim.hsm_mock.key_download import KeyDownloadError, parse_tmk


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    city: str
    mcc: str
    currency: str
    allow_manual_entry: bool


@dataclass(frozen=True)
class TerminalProfile:
    """What the host knows about a terminal: its ID (field 41), merchant (field 42) and master key."""

    tid: str
    mid: str
    tmk: bytes | None = field(default=None, repr=False)
    """The terminal master key working keys are sent under; None: no key download for this terminal."""
    bdk: bytes | None = field(default=None, repr=False)
    """The base derivation key of a DUKPT terminal's PIN pad; None: PINs come under the sign-on PIN key."""


class Registry:
    def __init__(self, merchants: list[Merchant], terminals: list[TerminalProfile]):
        self._merchants = {m.id: m for m in merchants}
        self._terminals = {t.tid: t for t in terminals}

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> Registry:
        merchants = [_merchant(entry, fixture_path("merchants.yaml", folder)) for entry in _entries("merchants.yaml", "merchants", folder)]
        known = {m.id for m in merchants}
        terminals = []
        source = fixture_path("terminals.yaml", folder)
        for entry in _entries("terminals.yaml", "terminals", folder):
            tid, mid = _text(entry, "tid", source), _text(entry, "mid", source)
            if mid not in known:
                raise FixtureError(f"{source}: terminal {tid} names merchant {mid}, which merchants.yaml does not define")
            tmk = None
            if entry.get("tmk") is not None:
                try:
                    tmk = parse_tmk(entry["tmk"], f"{source}: terminal {tid}")
                except KeyDownloadError as exc:
                    raise FixtureError(str(exc)) from None
            terminals.append(TerminalProfile(tid, mid, tmk, _dukpt_bdk(entry, f"{source}: terminal {tid}")))
        return cls(merchants, terminals)

    def dukpt_bdks(self) -> dict[str, bytes]:
        """The BDK of every DUKPT terminal, by terminal ID."""
        return {t.tid: t.bdk for t in self._terminals.values() if t.bdk is not None}

    def terminal(self, tid: str) -> TerminalProfile | None:
        return self._terminals.get(tid)

    def merchant(self, mid: str) -> Merchant | None:
        return self._merchants.get(mid)

    def merchant_ids(self) -> set[str]:
        return set(self._merchants)

    def refusal(self, tid: str, mid: str | None) -> str | None:
        """Why terminal `tid` calling for merchant `mid` is not one of ours, or None when it is."""
        profile = self._terminals.get(tid)
        if profile is None:
            return f"terminal {tid} is not registered"
        if mid is not None and mid != profile.mid:
            return f"terminal {tid} belongs to merchant {profile.mid}, not {mid}"
        return None


def _entries(name: str, key: str, folder: str | Path | None) -> list[dict[str, Any]]:
    data = load_fixture(name, folder)
    entries = data.get(key)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FixtureError(f"{fixture_path(name, folder)}: `{key}` must be a list of mappings")
    return entries


def _text(entry: dict[str, Any], key: str, source: Path) -> str:
    value = entry.get(key)
    if value is None or isinstance(value, (dict, list)):
        raise FixtureError(f"{source}: an entry lacks `{key}`: {entry!r}")
    return str(value)


def _dukpt_bdk(entry: dict[str, Any], who: str) -> bytes | None:
    """The BDK of a terminal's `dukpt:` setting (the terminal side reads the KSN from it too)."""
    dukpt = entry.get("dukpt")
    if dukpt is None:
        return None
    try:
        return parse_dukpt(dukpt, who).bdk
    except DukptSetupError as exc:
        raise FixtureError(str(exc)) from None


def _merchant(entry: dict[str, Any], source: Path) -> Merchant:
    return Merchant(
        id=_text(entry, "id", source),
        name=str(entry.get("name", "")),
        city=str(entry.get("city", "")),
        mcc=str(entry.get("mcc", "")),
        currency=_text(entry, "currency", source),
        allow_manual_entry=bool(entry.get("allow_manual_entry", True)),
    )
