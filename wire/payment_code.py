"""Consumer-presented wallet payment codes: the digits a customer's wallet app
shows (as a bar code and a QR) and a POS scans.

A terminal routes a scanned code by its shape alone, so `classify` is the
scheme table: WeChat-style codes are 18 digits starting 10-15, Alipay-style
16-24 digits starting 25-30, UnionPay QuickPass 19 digits starting 62 with a
Luhn check digit last. A wallet that shows an EMV consumer-presented QR
instead (base64 BER-TLV, see emv_cpm) is told apart by `looks_like_emv_cpm`.

Wallets make codes offline, so a code must prove itself without a round trip
to the wallet when it was shown. This lab's wallets use the layout

    scheme prefix (2) · wallet account number (6) · TOTP (10) [· Luhn digit]

where the TOTP is RFC 6238 over HMAC-SHA1 with RFC 4226 dynamic truncation in
30-second steps, all 10 digits of the 31-bit truncated value. The wallet
network holds each account's secret and accepts a step either side of now,
the clock drift a phone and a host may have.

A payment code is as good as cash for a minute: errors name the offset and
what is wrong, and quote at most the first 2 digits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from . import tlv

ACCOUNT_DIGITS = 6
OTP_DIGITS = 10
"""All of the 31-bit truncated HMAC (at most 2147483647), zero-padded."""
STEP_SECONDS = 30
"""RFC 6238's default time step, the one authenticator apps use."""

_EPOCH = datetime(1970, 1, 1)
_NON_DIGIT = re.compile(r"[^0-9]")


class PaymentCodeError(ValueError):
    """A scanned code that is no wallet's payment code; `offset` is the character at fault."""

    def __init__(self, message: str, offset: int):
        self.offset = offset
        super().__init__(f"payment code at offset {offset}: {message}")


@dataclass(frozen=True)
class Scheme:
    channel: str
    lengths: tuple[int, ...]
    prefixes: tuple[str, ...]
    issue_prefix: str
    """The prefix this lab's wallets put on the codes they make."""
    luhn: bool
    """Whether the last digit is a Luhn check digit over the others."""


SCHEMES: dict[str, Scheme] = {
    "wechat": Scheme("wechat", (18,), tuple(str(n) for n in range(10, 16)), "13", False),
    "alipay": Scheme("alipay", tuple(range(16, 25)), tuple(str(n) for n in range(25, 31)), "28", False),
    "unionpay": Scheme("unionpay", (19,), ("62",), "62", True),
}
CHANNELS = tuple(SCHEMES)

_BY_PREFIX = {prefix: scheme for scheme in SCHEMES.values() for prefix in scheme.prefixes}
_LENGTHS = sorted({n for scheme in SCHEMES.values() for n in scheme.lengths})


@dataclass(frozen=True)
class CodeParts:
    channel: str
    account_number: str
    otp: str = field(repr=False)
    """Kept out of repr: with the account number it is the whole code."""


def classify(code: str) -> str:
    """The channel a scanned code belongs to, from its digits, length and prefix."""
    stray = _NON_DIGIT.search(code)
    if stray is not None:
        raise PaymentCodeError("not a digit; a payment code is digits only", stray.start())
    if len(code) not in _LENGTHS:
        too_long = len(code) > _LENGTHS[-1]
        raise PaymentCodeError(
            f"{len(code)} digits; payment codes have {_LENGTHS[0]} to {_LENGTHS[-1]}",
            _LENGTHS[-1] if too_long else len(code),
        )
    scheme = _BY_PREFIX.get(code[:2])
    if scheme is None:
        raise PaymentCodeError(f"prefix {code[:2]} belongs to no wallet scheme", 0)
    if len(code) not in scheme.lengths:
        expected = _describe_lengths(scheme.lengths)
        raise PaymentCodeError(
            f"a {scheme.channel} code (prefix {code[:2]}) has {expected} digits, this one {len(code)}",
            min(len(code), max(scheme.lengths)),
        )
    return scheme.channel


def looks_like_emv_cpm(text: str) -> bool:
    """Whether scanned text is an EMV consumer-presented QR rather than a wallet's digits.

    Only the outer shape is checked (base64 of BER-TLV whose first object is
    tag 85); emv_cpm.decode_cpm says whether the payload is valid.
    """
    try:
        data = base64.b64decode(text.strip().encode("ascii"), validate=True)
        items = tlv.parse(data)
    except (UnicodeEncodeError, binascii.Error, tlv.TlvError):
        return False
    return bool(items) and items[0][0] == "85"


def hotp(secret: bytes, counter: int, digits: int) -> str:
    """RFC 4226 HOTP: HMAC-SHA1 of the 8-byte counter, dynamically truncated to 31 bits, last `digits` digits."""
    if not 6 <= digits <= 10:
        raise ValueError(f"digits must be 6 to 10, got {digits}")
    if not 0 <= counter < 1 << 64:
        raise ValueError("counter must fit in 8 unsigned bytes")
    mac = hmac.new(secret, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    at = mac[-1] & 0x0F
    value = int.from_bytes(mac[at : at + 4], "big") & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def totp(secret: bytes, at: datetime, digits: int, step: int = STEP_SECONDS) -> str:
    """RFC 6238 TOTP (HMAC-SHA1, T0 = the Unix epoch) for the step holding `at`; see `time_step`."""
    return hotp(secret, time_step(at, step), digits)


def time_step(at: datetime, step: int = STEP_SECONDS) -> int:
    """RFC 6238's T: whole steps since the Unix epoch.

    A naive `at` is read as UTC. possim's clocks are naive local time, and a
    wallet and a host reading the same clock then count the same steps, on
    any machine, whatever its zone.
    """
    if step < 1:
        raise ValueError(f"step must be at least 1 second, got {step}")
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    if at < _EPOCH:
        raise ValueError("time is before the Unix epoch")
    return (at - _EPOCH) // timedelta(seconds=step)


def generate(channel: str, account_number: str, secret: bytes, at: datetime) -> str:
    """The code a wallet shows at `at`: issue prefix, account number, TOTP [, Luhn digit]."""
    scheme = SCHEMES.get(channel)
    if scheme is None:
        raise ValueError(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
    if len(account_number) != ACCOUNT_DIGITS or not account_number.isascii() or not account_number.isdigit():
        raise ValueError(f"account_number must be {ACCOUNT_DIGITS} digits")
    if not secret:
        raise ValueError("secret must not be empty")
    code = scheme.issue_prefix + account_number + totp(secret, at, OTP_DIGITS)
    return code + luhn_digit(code) if scheme.luhn else code


def read(code: str) -> CodeParts:
    """The parts of a code in this lab's wallet layout, its Luhn digit checked where the scheme has one."""
    scheme = SCHEMES[classify(code)]
    length = 2 + ACCOUNT_DIGITS + OTP_DIGITS + scheme.luhn
    if len(code) != length:
        raise PaymentCodeError(
            f"{len(code)} digits; {scheme.channel} codes of this lab's wallets have {length}", min(len(code), length)
        )
    if scheme.luhn and luhn_digit(code[:-1]) != code[-1]:
        raise PaymentCodeError("Luhn check digit does not match", len(code) - 1)
    otp_at = 2 + ACCOUNT_DIGITS
    return CodeParts(scheme.channel, code[2:otp_at], code[otp_at : otp_at + OTP_DIGITS])


def verify(code: str, secret: bytes, at: datetime, window: int = 1) -> bool:
    """Whether the code's TOTP is `secret`'s for a step from `window` before `at`'s to `window` after.

    Every step of the window is compared, in constant time, so the answer's
    timing says nothing about which digits or which step matched.
    """
    if window < 0:
        raise ValueError(f"window must be 0 or more steps, got {window}")
    otp = read(code).otp.encode("ascii")
    now = time_step(at)
    matched = False
    for counter in range(max(now - window, 0), now + window + 1):
        matched |= hmac.compare_digest(hotp(secret, counter, OTP_DIGITS).encode("ascii"), otp)
    return matched


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to `digits`."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def _describe_lengths(lengths: tuple[int, ...]) -> str:
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]} to {lengths[-1]}"
