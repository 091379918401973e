"""The HSM as an I/O-free object: payShield-style host commands in, replies out.

A request body is `header · command (2) · fields`; the reply is
`header · response code · error code (2) · fields`, the response code being
the command with its second letter advanced (CA -> CB). `Hsm.handle` never
raises: bad input, parity errors and failed verifications become error
codes, an unknown command becomes 68, and the caller (the TCP front) keeps
the connection. Field layouts are in docs/hsm.md.

Keys arrive and leave encrypted under the LMK (or a ZMK/TMK); clear keys,
PINs and PIN blocks live only inside one command call. Error reasons (for the
server's log) name the field and never carry its value.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass

from . import dukpt_tdes, pinblock, pinverify
from .cipher import CryptoKeyError, require_odd_parity, tdes_ecb_encrypt
from .cvv import card_verification_value
from .lmk import (
    BDK,
    CVK,
    PAIR_CODES,
    PVK,
    SCHEME_LENGTHS,
    TMK,
    TPK,
    ZMK,
    ZPK,
    KeyType,
    LmkError,
    VariantLmk,
    key_text,
    key_type,
    unwrap,
    wrap,
)
from .mac import MacError, cbc_mac, retail_mac
from .pinblock import PinBlockError, RandomSource

DEFAULT_HEADER_LENGTH = 4
FIRMWARE = "0007-E000"
"""NC's 9-character firmware number (xxxx-xxxx), in the form payShield reports."""

OK = "00"
VERIFICATION_FAILED = "01"
KEY_PARITY_ADVICE = "01"
"""A6 only: the imported key had even-parity bytes; odd parity was forced and the reply still carries the key."""
SOURCE_KEY_PARITY = "10"
DESTINATION_KEY_PARITY = "11"
INVALID_INPUT = "15"
INVALID_PIN_BLOCK = "20"
INVALID_PIN_BLOCK_FORMAT = "23"
INVALID_PIN_LENGTH = "24"
PVK_NOT_DOUBLE_LENGTH = "27"
INTERNAL_ERROR = "41"
NOT_SUPPORTED = "68"

PIN_BLOCK_FORMATS = {"01": 0, "05": 1, "47": 3}
"""payShield PIN block format codes this HSM reads and writes -> ISO 9564 format."""

MAC_KEY_TYPES = ("003", "008")
"""M6/M8 take a TAK (LMK 16-17) or a ZAK (LMK 26-27)."""

_HEX = frozenset("0123456789ABCDEFabcdef")
_DIGITS = frozenset("0123456789")


class CommandError(Exception):
    """A command that ends with a non-zero error code; `reason` names the field, never its value.

    `fields` is for the rare advice-only code whose reply still carries data (A6's 01).
    """

    def __init__(self, code: str, reason: str, fields: str = ""):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True)
class Answer:
    """One request's outcome: the reply bytes and, for logs, what happened."""

    reply: bytes
    command: str
    error_code: str
    reason: str = ""


class _Fields:
    """Reads a command's fields left to right; every failure names the field and its offset."""

    def __init__(self, text: str):
        self.text = text
        self.at = 0

    def _fail(self, what: str, expected: str) -> CommandError:
        return CommandError(INVALID_INPUT, f"{what} at field offset {self.at}: expected {expected}")

    def take(self, count: int, what: str, charset: frozenset[str] | None = None) -> str:
        value = self.text[self.at : self.at + count]
        if len(value) != count:
            raise self._fail(what, f"{count} characters, {len(value)} left")
        if charset is not None and not set(value) <= charset:
            kind = "decimal digits" if charset is _DIGITS else "hex digits"
            raise self._fail(what, f"{count} {kind}")
        self.at += count
        return value

    def hex(self, count: int, what: str) -> str:
        return self.take(count, what, _HEX).upper()

    def digits(self, count: int, what: str) -> str:
        return self.take(count, what, _DIGITS)

    def one_of(self, what: str, choices: str | tuple[str, ...]) -> str:
        width = len(choices[0]) if isinstance(choices, tuple) else 1
        value = self.take(width, what).upper()
        if value not in choices:
            raise CommandError(INVALID_INPUT, f"{what} at field offset {self.at - width}: not one of {', '.join(choices)}")
        return value

    def digits_until(self, delimiter: str, what: str, shortest: int, longest: int) -> str:
        end = self.text.find(delimiter, self.at)
        if end < 0:
            raise self._fail(what, f"digits ended by {delimiter!r}")
        value = self.text[self.at : end]
        if not set(value) <= _DIGITS or not shortest <= len(value) <= longest:
            raise self._fail(what, f"{shortest} to {longest} decimal digits before {delimiter!r}")
        self.at = end + 1
        return value

    def peek(self, count: int = 1) -> str:
        return self.text[self.at : self.at + count]

    def key(self, what: str, untagged: int = 8) -> tuple[str, bytes]:
        """A key field: a scheme tag (U, T, X, Y) and its hex, or `untagged` bytes of bare hex."""
        tag = self.peek().upper()
        if tag in ("U", "T", "X", "Y"):
            self.at += 1
            return tag, bytes.fromhex(self.hex(2 * SCHEME_LENGTHS[tag], what))
        scheme = {8: "Z", 16: "X", 24: "Y"}[untagged]
        return scheme, bytes.fromhex(self.hex(2 * untagged, what))

    def end(self) -> None:
        """Nothing may follow but the optional LMK identifier %00 (this HSM holds one LMK)."""
        if self.peek() == "%":
            self.at += 1
            self.one_of("LMK identifier", ("00",))
        if self.at != len(self.text):
            raise CommandError(INVALID_INPUT, f"unexpected data at field offset {self.at}")


def _odd_parity(key: bytes) -> bytes:
    return bytes(byte ^ (0 if bin(byte).count("1") % 2 else 1) for byte in key)


def _kcv(key: bytes, hex_digits: int) -> str:
    return tdes_ecb_encrypt(key, bytes(8)).hex().upper()[:hex_digits]


class Hsm:
    """A payShield-style HSM over one variant LMK; typical use::

        hsm = Hsm(VariantLmk.test())
        hsm.handle(b"0000NC")  # -> b"0000ND00" + LMK check value + firmware
    """

    def __init__(
        self,
        lmk: VariantLmk | None = None,
        rng: RandomSource | None = None,
        header_length: int = DEFAULT_HEADER_LENGTH,
    ):
        self.lmk = lmk if lmk is not None else VariantLmk.test()
        self.rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self.header_length = header_length
        self._commands: dict[str, Callable[[_Fields], str]] = {
            "NC": self._diagnostics,
            "BU": self._key_check_value,
            "A0": self._generate_key,
            "CW": self._generate_cvv,
            "CY": self._verify_cvv,
            "M6": self._generate_mac,
            "M8": self._verify_mac,
            "CA": self._translate_pin_tpk_to_zpk,
            "G0": self._translate_pin_dukpt_to_zpk,
            "DA": self._verify_terminal_pin_ibm,
            "EA": self._verify_interchange_pin_ibm,
            "DC": self._verify_terminal_pin_visa,
            "EC": self._verify_interchange_pin_visa,
            "A6": self._import_key,
            "A8": self._export_key,
        }

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self._commands)

    def handle(self, request: bytes) -> bytes:
        return self.answer(request).reply

    def answer(self, request: bytes) -> Answer:
        """The reply to one request body (no length prefix), with what happened for the log."""
        # latin-1 maps every byte to one character, so binary M6 data and offsets survive.
        text = request.decode("latin-1")
        header = text[: self.header_length]
        command = text[self.header_length : self.header_length + 2]
        if len(command) < 2:
            reason = f"request of {len(request)} bytes has no command code after the {self.header_length}-character header"
            return Answer((header + "ZZ" + INVALID_INPUT).encode("latin-1"), command, INVALID_INPUT, reason)
        response = command[0] + chr((ord(command[1]) + 1) % 256)  # a byte even for garbage
        handler = self._commands.get(command.upper())
        fields, code, reason = "", OK, ""
        if handler is None:
            code, reason = NOT_SUPPORTED, f"command {command!r} is not supported"
        else:
            try:
                fields = handler(_Fields(text[self.header_length + 2 :]))
            except CommandError as exc:
                code, reason, fields = exc.code, exc.reason, exc.fields
            except (ValueError, LmkError) as exc:
                # Our primitives name the parameter, never its value.
                code, reason = INVALID_INPUT, str(exc)
            except Exception as exc:  # an HSM answers; it does not crash the link
                code, reason = INTERNAL_ERROR, f"internal error ({type(exc).__name__})"
        return Answer((header + response + code + fields).encode("latin-1"), command, code, reason)

    # ---- keys ----

    def _random_key(self, length: int) -> bytes:
        raw = b"".join(self.rng.getrandbits(64).to_bytes(8, "big") for _ in range(length // 8))
        return _odd_parity(raw)

    def _lmk_key(self, fields: _Fields, kind: KeyType, what: str, parity_error: str, untagged: int = 8) -> bytes:
        """Read a key under the LMK, decrypt it for `kind` and insist on odd parity."""
        scheme, cryptogram = fields.key(what, untagged)
        clear = self.lmk.decrypt(cryptogram, kind, scheme)
        try:
            return require_odd_parity(clear, what)
        except CryptoKeyError:
            raise CommandError(parity_error, f"{what}: parity error after decryption under LMK {kind.pair_name}") from None

    # ---- commands ----

    def _diagnostics(self, fields: _Fields) -> str:
        """NC: LMK check value (16H) and firmware number (9A)."""
        fields.end()
        return self.lmk.check_value().hex().upper() + FIRMWARE

    def _key_check_value(self, fields: _Fields) -> str:
        """BU: the 16-hex check value of a key under the LMK."""
        code = fields.hex(2, "key type code")
        if code != "FF" and code not in PAIR_CODES:
            raise CommandError(INVALID_INPUT, "key type code: not an LMK pair code 00-0E or FF")
        length = {"0": 8, "1": 16, "2": 24}[fields.one_of("key length flag", "012")]
        scheme, cryptogram = fields.key("key", length)
        if len(cryptogram) != length:
            raise CommandError(INVALID_INPUT, f"key: {len(cryptogram)} bytes but the key length flag says {length}")
        if code == "FF":
            fields.one_of("delimiter", ";")
            kind = key_type(fields.hex(3, "key type"))
        else:
            kind = KeyType("0" + code, PAIR_CODES[code], 0)
        fields.end()
        clear = self.lmk.decrypt(cryptogram, kind, scheme)
        try:
            require_odd_parity(clear, "key")
        except CryptoKeyError:
            raise CommandError(SOURCE_KEY_PARITY, "key: parity error after decryption under the LMK") from None
        return _kcv(clear, 16)

    def _generate_key(self, fields: _Fields) -> str:
        """A0: a random key under the LMK, and in mode 1 also under a ZMK or TMK, with its KCV."""
        mode = fields.one_of("mode", "01")
        kind = key_type(fields.hex(3, "key type"))
        scheme = fields.one_of("key scheme (LMK)", "ZUTXY")
        clear = self._random_key(SCHEME_LENGTHS[scheme])
        under_kek = ""
        if mode == "1":
            kek_kind = ZMK
            if fields.peek() == ";":
                fields.at += 1
                kek_kind = TMK if fields.one_of("ZMK/TMK flag", "01") == "1" else ZMK
            kek = self._lmk_key(fields, kek_kind, "ZMK/TMK", SOURCE_KEY_PARITY, untagged=16)
            if len(kek) != 16:
                raise CommandError(INVALID_INPUT, "ZMK/TMK: this HSM wraps under double-length ZMKs/TMKs only")
            kek_scheme = fields.one_of("key scheme (ZMK)", "ZUTXY")
            if SCHEME_LENGTHS[kek_scheme] != len(clear):
                raise CommandError(INVALID_INPUT, "key scheme (ZMK): does not match the key length of the LMK scheme")
            under_kek = key_text(kek_scheme, wrap(kek, clear, kek_scheme))
        fields.end()
        return key_text(scheme, self.lmk.encrypt(clear, kind, scheme)) + under_kek + _kcv(clear, 6)

    def _cvv_fields(self, fields: _Fields, with_cvv: bool) -> tuple[bytes, str, str, str, str]:
        cvk = self._lmk_key(fields, CVK, "CVK", SOURCE_KEY_PARITY, untagged=16)
        if len(cvk) != 16:
            raise CommandError(INVALID_INPUT, "CVK: a CVK pair is double length")
        candidate = fields.digits(3, "CVV") if with_cvv else ""
        pan = fields.digits_until(";", "primary account number", 12, 19)
        expiry = fields.digits(4, "expiration date")
        service_code = fields.digits(3, "service code")
        fields.end()
        return cvk, candidate, pan, expiry, service_code

    def _generate_cvv(self, fields: _Fields) -> str:
        """CW: the 3-digit CVV of PAN, expiry (as sent, normally YYMM) and service code."""
        cvk, _, pan, expiry, service_code = self._cvv_fields(fields, with_cvv=False)
        return card_verification_value(cvk, pan, expiry, service_code)

    def _verify_cvv(self, fields: _Fields) -> str:
        """CY: 00 when the CVV matches, 01 when it does not."""
        cvk, candidate, pan, expiry, service_code = self._cvv_fields(fields, with_cvv=True)
        if not hmac.compare_digest(card_verification_value(cvk, pan, expiry, service_code), candidate):
            raise CommandError(VERIFICATION_FAILED, "CVV verification failed")
        return ""

    def _mac(self, fields: _Fields) -> tuple[str, int]:
        """The MAC (hex) an M6/M8 request asks for, and its hex length."""
        fields.one_of("mode flag", "0")
        input_format = fields.one_of("input format flag", "012")
        size = 8 if fields.one_of("MAC size", "01") == "0" else 16
        algorithm = fields.one_of("MAC algorithm", "13")
        padding = int(fields.one_of("padding method", "0123"))
        kind = key_type(fields.one_of("key type", MAC_KEY_TYPES))
        key = self._lmk_key(fields, kind, "MAC key", SOURCE_KEY_PARITY)
        length = int(fields.hex(4, "message length"), 16)
        message = fields.take(length, "message")
        if input_format == "1":
            if len(message) % 2 or not set(message) <= _HEX:
                raise CommandError(INVALID_INPUT, "message: input format 1 needs an even number of hex digits")
            data = bytes.fromhex(message)
        else:
            data = message.encode("latin-1")
        if padding == 0:
            if not data or len(data) % 8:
                raise CommandError(INVALID_INPUT, f"message: {len(data)} bytes is not a whole number of 8-byte blocks (padding 0)")
            padding = 1  # whole blocks: method 1 adds nothing
        try:
            if algorithm == "1":
                mac = cbc_mac(key, data, padding)
            else:
                mac = retail_mac(key, data, padding)
        except MacError as exc:
            raise CommandError(INVALID_INPUT, str(exc)) from None
        return mac.hex().upper()[:size], size

    def _generate_mac(self, fields: _Fields) -> str:
        """M6: the MAC of a message, 8 or 16 hex digits."""
        mac, _ = self._mac(fields)
        fields.end()
        return mac

    def _verify_mac(self, fields: _Fields) -> str:
        """M8: 00 when the MAC after the message matches, 01 when it does not."""
        expected, size = self._mac(fields)
        candidate = fields.hex(size, "MAC")
        fields.end()
        if not hmac.compare_digest(expected, candidate):
            raise CommandError(VERIFICATION_FAILED, "MAC verification failed")
        return ""

    def _translate_pin_tpk_to_zpk(self, fields: _Fields) -> str:
        """CA: a PIN block from under a TPK to under a ZPK, optionally changing its format."""
        tpk = self._lmk_key(fields, TPK, "TPK", SOURCE_KEY_PARITY)
        zpk = self._lmk_key(fields, ZPK, "ZPK", DESTINATION_KEY_PARITY)
        maximum = int(fields.digits(2, "maximum PIN length"))
        block = bytes.fromhex(fields.hex(16, "source PIN block"))
        source = fields.digits(2, "source PIN block format")
        destination = fields.digits(2, "destination PIN block format")
        account = fields.digits(12, "account number")
        fields.end()
        return self._translate(tpk, zpk, block, source, destination, account, maximum)

    def _translate_pin_dukpt_to_zpk(self, fields: _Fields) -> str:
        """G0: a PIN block from under a TDES DUKPT PIN key (BDK + KSN) to under a ZPK."""
        bdk = self._lmk_key(fields, BDK, "BDK", SOURCE_KEY_PARITY, untagged=16)
        zpk = self._lmk_key(fields, ZPK, "ZPK", DESTINATION_KEY_PARITY)
        fields.hex(3, "KSN descriptor")  # the KSN is always 20H here; the descriptor is checked, not needed
        ksn = bytes.fromhex(fields.hex(20, "key serial number"))
        block = bytes.fromhex(fields.hex(16, "source PIN block"))
        destination = fields.digits(2, "destination PIN block format")
        account = fields.digits(12, "account number")
        fields.end()
        if len(bdk) != 16:
            raise CommandError(INVALID_INPUT, "BDK: TDES DUKPT needs a double-length BDK")
        pin_key = dukpt_tdes.derive_keys(bdk, ksn).pin_key
        return self._translate(pin_key, zpk, block, "01", destination, account, 12)

    def _translate(
        self, source_key: bytes, zpk: bytes, block: bytes, source: str, destination: str, account: str, maximum: int
    ) -> str:
        """Decipher a PIN block, check it, re-encipher it under the ZPK: PIN length, block, format."""
        if destination not in PIN_BLOCK_FORMATS:
            raise CommandError(INVALID_PIN_BLOCK_FORMAT, f"destination PIN block format {destination} is not one of 01, 05, 47")
        pin = _decipher_pin(source_key, block, source, account, "source")
        if len(pin) > maximum:
            raise CommandError(INVALID_PIN_LENGTH, "PIN is longer than the maximum PIN length")
        translated = pinblock.encipher(zpk, PIN_BLOCK_FORMATS[destination], pin, _pan(account), self.rng)
        return f"{len(pin):02d}" + translated.hex().upper() + destination

    def _verify_terminal_pin_ibm(self, fields: _Fields) -> str:
        """DA: a PIN block under a TPK against an IBM 3624 offset."""
        return self._verify_pin_ibm(fields, TPK, "TPK")

    def _verify_interchange_pin_ibm(self, fields: _Fields) -> str:
        """EA: a PIN block under a ZPK against an IBM 3624 offset."""
        return self._verify_pin_ibm(fields, ZPK, "ZPK")

    def _verify_pin_ibm(self, fields: _Fields, kind: KeyType, what: str) -> str:
        """00 when the PIN in the block has the given offset, 01 when it does not.

        The first `check length` digits of the customer PIN are checked (IBM 3624
        offset method); a PIN whose length differs from the offset's never verifies.
        """
        pin_key = self._lmk_key(fields, kind, what, SOURCE_KEY_PARITY)
        pvk = self._lmk_key(fields, PVK, "PVK", DESTINATION_KEY_PARITY)
        if len(pvk) not in (8, 16):
            raise CommandError(INVALID_INPUT, "PVK: the IBM method takes a single- or double-length PVK")
        maximum = _pin_length(fields, "maximum PIN length")
        block = bytes.fromhex(fields.hex(16, "PIN block"))
        block_format = fields.digits(2, "PIN block format code")
        check = _pin_length(fields, "check length")
        account = fields.digits(12, "account number")
        table = fields.digits(16, "decimalisation table")
        validation = _validation_data(fields, account)
        offset = _offset(fields)
        fields.end()
        pin = _decipher_pin(pin_key, block, block_format, account, "")
        if len(pin) > maximum:
            raise CommandError(INVALID_PIN_LENGTH, "PIN is longer than the maximum PIN length")
        if len(pin) != len(offset) or len(pin) < check:
            raise CommandError(VERIFICATION_FAILED, "PIN verification failed")
        expected = pinverify.ibm3624_offset(pvk, validation, pin, decimalization_table=table)
        if not hmac.compare_digest(expected[:check], offset[:check]):
            raise CommandError(VERIFICATION_FAILED, "PIN verification failed")
        return ""

    def _verify_terminal_pin_visa(self, fields: _Fields) -> str:
        """DC: a PIN block under a TPK against a Visa PVV."""
        return self._verify_pin_visa(fields, TPK, "TPK")

    def _verify_interchange_pin_visa(self, fields: _Fields) -> str:
        """EC: a PIN block under a ZPK against a Visa PVV."""
        return self._verify_pin_visa(fields, ZPK, "ZPK")

    def _verify_pin_visa(self, fields: _Fields, kind: KeyType, what: str) -> str:
        """00 when the PIN in the block reproduces the PVV, 01 when it does not."""
        pin_key = self._lmk_key(fields, kind, what, SOURCE_KEY_PARITY)
        pvk = self._lmk_key(fields, PVK, "PVK pair", DESTINATION_KEY_PARITY, untagged=16)
        if len(pvk) != 16:
            raise CommandError(PVK_NOT_DOUBLE_LENGTH, "PVK pair: the Visa method takes a double-length PVK pair")
        block = bytes.fromhex(fields.hex(16, "PIN block"))
        block_format = fields.digits(2, "PIN block format code")
        account = fields.digits(12, "account number")
        pvki = fields.digits(1, "PVKI")
        pvv = fields.digits(4, "PVV")
        fields.end()
        pin = _decipher_pin(pin_key, block, block_format, account, "")
        if not pinverify.visa_pvv_verify(pvk, _pan(account), pvki, pin, pvv):
            raise CommandError(VERIFICATION_FAILED, "PIN verification failed")
        return ""

    def _import_key(self, fields: _Fields) -> str:
        """A6: a key from under a ZMK to under the LMK, with its KCV.

        As payShield does, a key with even-parity bytes is still imported with
        odd parity forced, and the reply says so with the advice-only code 01.
        """
        kind = key_type(fields.hex(3, "key type"))
        zmk = self._kek(fields, ZMK, "ZMK", SOURCE_KEY_PARITY)
        scheme, cryptogram = fields.key("key under ZMK")
        lmk_scheme = fields.one_of("key scheme (LMK)", "ZUTXY")
        fields.end()
        if SCHEME_LENGTHS[lmk_scheme] != len(cryptogram):
            raise CommandError(INVALID_INPUT, "key scheme (LMK): does not match the length of the key under ZMK")
        received = unwrap(zmk, cryptogram, scheme)
        clear = _odd_parity(received)
        reply = key_text(lmk_scheme, self.lmk.encrypt(clear, kind, lmk_scheme)) + _kcv(clear, 6)
        if clear != received:
            raise CommandError(KEY_PARITY_ADVICE, "key under ZMK: parity error after decryption; odd parity forced", reply)
        return reply

    def _export_key(self, fields: _Fields) -> str:
        """A8: a key from under the LMK to under a ZMK (or, with `;1`, a TMK), with its KCV."""
        kind = key_type(fields.hex(3, "key type"))
        kek_kind = ZMK
        if fields.peek() == ";":
            fields.at += 1
            kek_kind = TMK if fields.one_of("ZMK/TMK flag", "01") == "1" else ZMK
        kek = self._kek(fields, kek_kind, "ZMK/TMK", SOURCE_KEY_PARITY)
        clear = self._lmk_key(fields, kind, "key", DESTINATION_KEY_PARITY)
        kek_scheme = fields.one_of("key scheme (ZMK)", "ZUTXY")
        fields.end()
        if SCHEME_LENGTHS[kek_scheme] != len(clear):
            raise CommandError(INVALID_INPUT, "key scheme (ZMK): does not match the length of the key")
        return key_text(kek_scheme, wrap(kek, clear, kek_scheme)) + _kcv(clear, 6)

    def _kek(self, fields: _Fields, kind: KeyType, what: str, parity_error: str) -> bytes:
        """A double-length ZMK or TMK under the LMK: the only KEK length `wrap` takes."""
        kek = self._lmk_key(fields, kind, what, parity_error, untagged=16)
        if len(kek) != 16:
            raise CommandError(INVALID_INPUT, f"{what}: this HSM wraps under double-length ZMKs/TMKs only")
        return kek


def _pan(account: str) -> str:
    """The account number field is the 12 PAN digits left of the check digit; a
    placeholder check digit lets pinblock and pinverify take it as a PAN."""
    return account + "0"


def _decipher_pin(key: bytes, block: bytes, block_format: str, account: str, which: str) -> str:
    """The PIN in an enciphered PIN block, or 23/20 naming the format or block (never the PIN)."""
    name = f"{which} PIN block".strip()
    if block_format not in PIN_BLOCK_FORMATS:
        raise CommandError(INVALID_PIN_BLOCK_FORMAT, f"{name} format {block_format} is not one of 01, 05, 47")
    try:
        return pinblock.decipher(key, block, _pan(account), PIN_BLOCK_FORMATS[block_format])
    except PinBlockError:
        raise CommandError(INVALID_PIN_BLOCK, f"{name} does not decode in its format") from None


def _pin_length(fields: _Fields, what: str) -> int:
    value = fields.digits(2, what)
    if not 4 <= int(value) <= 12:
        raise CommandError(INVALID_INPUT, f"{what} at field offset {fields.at - 2}: expected 04 to 12")
    return int(value)


def _validation_data(fields: _Fields, account: str) -> str:
    """PIN validation data, 12 characters: hex digits and one N, which stands for the
    last 5 digits of the account number, giving the 16 hex digits the PVK encrypts."""
    at = fields.at
    data = fields.take(12, "PIN validation data").upper()
    if data.count("N") != 1 or not set(data.replace("N", "")) <= _HEX:
        raise CommandError(INVALID_INPUT, f"PIN validation data at field offset {at}: expected hex digits and one N")
    return data.replace("N", account[-5:])


def _offset(fields: _Fields) -> str:
    """The IBM offset: 12 characters, 4 to 12 decimal digits left-justified and padded with F."""
    at = fields.at
    offset = fields.take(12, "offset").upper().rstrip("F")
    if not 4 <= len(offset) <= 12 or not set(offset) <= _DIGITS:
        raise CommandError(INVALID_INPUT, f"offset at field offset {at}: expected 4 to 12 decimal digits padded with F")
    return offset
