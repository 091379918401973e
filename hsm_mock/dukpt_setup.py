"""A DUKPT PIN pad's setup as a lab's fixtures give it: the BDK and the initial KSN.

A lab injects the same test BDK into its host and derives each PIN pad's
initial key from it, so one `dukpt:` setting in terminals.yaml serves both
ends: the host keeps the BDK (under its LMK) and the terminal derives its
initial key and counts KSNs from the initial one. Errors name the setting,
never a key's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cipher import CryptoKeyError, double_length_key
from .dukpt_tdes import KSN_LENGTH, initial_key, ksn_counter


class DukptSetupError(ValueError):
    """A `dukpt:` setting that cannot be used; the message names the terminal and the setting."""


@dataclass(frozen=True)
class DukptSetup:
    bdk: bytes = field(repr=False)
    initial_ksn: bytes
    """The KSN the initial key was loaded with: its 21-bit counter is 0."""

    @property
    def initial_key(self) -> bytes:
        """The IPEK a lab loads into the PIN pad."""
        return initial_key(self.bdk, self.initial_ksn)


def parse_dukpt(setting: Any, who: str) -> DukptSetup:
    """`{bdk: 32 hex digits, ksn: 20 hex digits}` from a fixture."""
    if not isinstance(setting, dict):
        raise DukptSetupError(f"{who}: dukpt must be a mapping with bdk and ksn")
    try:
        bdk = double_length_key(setting.get("bdk", ""), "dukpt bdk")
        ksn = bytes.fromhex(str(setting.get("ksn", "")))
    except CryptoKeyError as exc:
        raise DukptSetupError(f"{who}: {exc}") from None
    except ValueError:
        raise DukptSetupError(f"{who}: dukpt ksn is not hex") from None
    if len(ksn) != KSN_LENGTH:
        raise DukptSetupError(f"{who}: dukpt ksn must be {2 * KSN_LENGTH} hex digits")
    if ksn_counter(ksn):
        raise DukptSetupError(f"{who}: dukpt ksn must be an initial KSN (transaction counter 0)")
    return DukptSetup(bdk, ksn)
