"""Online PIN verification, done the way an acquirer and an issuer do it: in the HSM.

A PIN block arrives under the terminal's key. The host asks the HSM to
translate it to the issuer's zone PIN key (CA for the PIN key the terminal
got at sign-on, G0 for a DUKPT terminal), then to verify it the way the
issuer stores PINs (EC against a Visa PVV, EA against an IBM 3624 offset).
The host holds every key only under the LMK and never sees a PIN; the HSM
may run in this process or behind TCP (`possim host run --hsm HOST:PORT`),
with the same commands either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from possim.hsm_mock.client import HsmClient, HsmReply, HsmUnavailable
from possim.hsm_mock.lmk import BDK, PVK, ZPK, VariantLmk, key_text

from .issuer import Card, Issuer, PinPolicy

ISO_FORMAT_0 = "01"
"""payShield's code for ISO 9564 format 0, the format terminals here send."""
MAXIMUM_PIN_LENGTH = "12"
KSN_DESCRIPTOR = "A05"
"""G0's KSN descriptor: BDK ID, sub-key ID and device ID lengths of a 20-digit KSN (6-5-5 style)."""
_WRONG_PIN_ERRORS = {
    "01": "PIN does not verify",
    "20": "PIN block does not decode under the terminal's key",
    "24": "PIN longer than 12 digits",
}
"""HSM error codes that mean the cardholder's PIN (or what the terminal made of it) is wrong."""

VERIFIED, WRONG, REFUSED = "verified", "wrong", "refused"


@dataclass(frozen=True)
class PinCheck:
    outcome: str
    """verified, wrong (counts as a try), or refused (cannot be checked: `code` says how to answer)."""
    reason: str = ""
    code: str | None = None


@dataclass(frozen=True)
class _IssuerKeys:
    zpk: str
    pvk: str


class PinVerifier:
    """Checks PIN blocks for the issuers of the issuer stub, through one HSM."""

    def __init__(self, hsm: HsmClient, lmk: VariantLmk, issuers: Iterable[Issuer], bdks: dict[str, bytes]):
        """`bdks` maps a DUKPT terminal's ID to its BDK (clear, from the fixture; kept here under the LMK only)."""
        self.hsm = hsm
        self._issuers = {
            issuer.name: _IssuerKeys(key_text("U", lmk.encrypt(issuer.pin.zpk, ZPK, "U")),
                                     key_text("U", lmk.encrypt(issuer.pin.pvk, PVK, "U")))
            for issuer in issuers if issuer.pin is not None
        }
        self._bdks = {tid: key_text("U", lmk.encrypt(bdk, BDK, "U")) for tid, bdk in bdks.items()}

    def check(
        self, *, tid: str, tpk: str | None, ksn: str | None, pin_block: str, pan: str, issuer: Issuer, card: Card
    ) -> PinCheck:
        """Whether the PIN in `pin_block` is the card's.

        `tpk` is the terminal's working PIN key under the LMK (hex), `ksn`
        the key serial number a DUKPT terminal sent; one of them applies.
        """
        policy, keys = issuer.pin, self._issuers.get(issuer.name)
        if policy is None or keys is None:
            return PinCheck(REFUSED, f"issuer {issuer.name} verifies no PINs", "55")
        if not _verifiable(policy, card):
            return PinCheck(REFUSED, f"card {card.name} has no {policy.method} PIN data on file", "55")
        account = pan[-13:-1]
        translated = self._translate(tid, tpk, ksn, pin_block, keys.zpk, account)
        if not isinstance(translated, str):
            return translated
        if policy.method == "visa-pvv":
            fields = f"{keys.zpk}{keys.pvk}{translated}{ISO_FORMAT_0}{account}{card.pvki}{card.pvv}"
            command = "EC"
        else:
            offset = (card.pin_offset or "").ljust(12, "F")
            fields = (f"{keys.zpk}{keys.pvk}{MAXIMUM_PIN_LENGTH}{translated}{ISO_FORMAT_0}"
                      f"{len(card.pin_offset or ''):02d}{account}{policy.decimalisation}{validation_data(account)}{offset}")
            command = "EA"
        return self._verdict(command, fields)

    def _translate(
        self, tid: str, tpk: str | None, ksn: str | None, pin_block: str, zpk: str, account: str
    ) -> str | PinCheck:
        """The PIN block under the issuer's ZPK (hex), or why there is none."""
        bdk = self._bdks.get(tid)
        if bdk is not None:
            if ksn is None or len(ksn) != 20:
                return PinCheck(REFUSED, "DUKPT terminal sent no 20-digit key serial number", "30")
            command, fields = "G0", f"{bdk}{zpk}{KSN_DESCRIPTOR}{ksn}{pin_block}{ISO_FORMAT_0}{account}"
        elif tpk is None:
            return PinCheck(REFUSED, "terminal has no working PIN key: sign on first", "55")
        else:
            command = "CA"
            fields = f"U{tpk}{zpk}{MAXIMUM_PIN_LENGTH}{pin_block}{ISO_FORMAT_0}{ISO_FORMAT_0}{account}"
        reply = self._call(command, fields)
        if isinstance(reply, PinCheck):
            return reply
        if reply.error_code in _WRONG_PIN_ERRORS:
            return PinCheck(WRONG, _WRONG_PIN_ERRORS[reply.error_code])
        if not reply.ok:
            return PinCheck(REFUSED, f"HSM {command} failed with error {reply.error_code}", "96")
        return reply.fields[2:18]  # PIN length (2), then the block under the ZPK

    def _verdict(self, command: str, fields: str) -> PinCheck:
        reply = self._call(command, fields)
        if isinstance(reply, PinCheck):
            return reply
        if reply.ok:
            return PinCheck(VERIFIED)
        if reply.error_code in _WRONG_PIN_ERRORS:
            return PinCheck(WRONG, _WRONG_PIN_ERRORS[reply.error_code])
        return PinCheck(REFUSED, f"HSM {command} failed with error {reply.error_code}", "96")

    def _call(self, command: str, fields: str) -> HsmReply | PinCheck:
        try:
            return self.hsm.call(command, fields)
        except HsmUnavailable as exc:
            return PinCheck(REFUSED, f"HSM unavailable: {exc}", "96")


def validation_data(account: str) -> str:
    """IBM 3624 validation data as EA takes it: the account's 11 leftmost digits, then N for its last 5.

    The HSM puts the 5 digits in place of N, giving the 16 digits it encrypts;
    offsets in cards.yaml are made from the same 16 digits.
    """
    return account[:11] + "N"


def _verifiable(policy: PinPolicy, card: Card) -> bool:
    if policy.method == "visa-pvv":
        return card.pvv is not None and card.pvki is not None
    return card.pin_offset is not None
