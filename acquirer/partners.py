"""Partners of the open-platform order API: who may create orders, under which key, for which merchant.

Read from `partners.yaml`. A partner's orders are journaled under its own
virtual terminal ID, so they settle and reconcile with the merchant's card
and QR takings but never meet a real terminal's STANs or batches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from possim.fixtures import FixtureError, fixture_path, load_fixture

_KEY = re.compile(r"[0-9A-Fa-f]{32,128}\Z")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


@dataclass(frozen=True)
class Partner:
    id: str
    merchant_id: str
    terminal_id: str
    key: bytes = field(repr=False)


class Partners:
    def __init__(self, partners: list[Partner]):
        self._partners = {p.id: p for p in partners}

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None, merchants: set[str] | None = None) -> Partners:
        """`merchants`: the merchant IDs the host knows; a partner naming another one is a fixture error."""
        source = fixture_path("partners.yaml", folder)
        raw = load_fixture("partners.yaml", folder).get("partners") or {}
        if not isinstance(raw, dict):
            raise FixtureError(f"{source}: `partners` must map a partner ID to its key, merchant_id and terminal_id")
        partners = []
        for pid, entry in raw.items():
            where = f"{source}: partners.{pid}"
            if not isinstance(pid, str) or not _ID.match(pid):
                raise FixtureError(f"{where}: a partner ID is 1-32 letters, digits, '_', '.' or '-'")
            if not isinstance(entry, dict):
                raise FixtureError(f"{where}: must be a mapping (key, merchant_id, terminal_id)")
            key, mid, tid = entry.get("key"), entry.get("merchant_id"), entry.get("terminal_id")
            if not isinstance(key, str) or not _KEY.match(key) or len(key) % 2:
                raise FixtureError(f"{where}.key: must be 32 to 128 hex digits, an even number")
            if not isinstance(mid, str) or len(mid) != 15:
                raise FixtureError(f"{where}.merchant_id: must be 15 characters, quoted")
            if merchants is not None and mid not in merchants:
                raise FixtureError(f"{where}.merchant_id: {mid} is not in merchants.yaml")
            if not isinstance(tid, str) or len(tid) != 8:
                raise FixtureError(f"{where}.terminal_id: must be 8 characters, quoted")
            partners.append(Partner(pid, mid, tid, bytes.fromhex(key)))
        return cls(partners)

    def get(self, partner_id: str) -> Partner | None:
        return self._partners.get(partner_id)

    def key(self, partner_id: str) -> bytes | None:
        partner = self._partners.get(partner_id)
        return partner.key if partner else None
