"""Raw frame replay (docs/replay.md "Raw frames"): recorded whole frames sent again, their answers diffed.

A `.hex` file holds one frame a line: `> HEX` a request, `< HEX` the answer
recorded for the request above it (a line without a marker is a request),
`#` starts a comment, spaces inside the hex are ignored. Frames are whole,
as on the wire: length header, TPDU and dialect header, message.

`write_hex` (for `possim record --raw`) blanks card data in every frame
(wire/frame_redaction.py), so the file is safe to keep and share. A blanked
PAN still names its test card by first 6, last 4 and length: `replay_raw`
puts that card's PAN and track back from cards.yaml before sending, so the
host sees the card the session used. Field 55's blanked tags stay zeros
(the lab host does not read them); a MAC is sent as recorded, so a replay
is for terminals the host holds no MAC key for.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import Dialect
from possim.wire.frame_redaction import RedactionError, blank_pan, redact_body, redact_message, track_pan
from possim.wire.framing import FramingError, encode_length
from possim.wire.masking import mask_pan
from possim.wire.message import Message
from possim.wire.trace import redact_value

from ..cards import Card, fixture_cards
from ..link import LinkError, LinkTimeout, TcpLink
from ..messages import answer_body, response_text

DEFAULT_IGNORE = frozenset({7, 11, 12, 13, 15, 37, 38, 64, 128})
"""Fields that vary with time and sequence (dates, times, STAN, RRN, authorization code, MACs): not compared."""

_HEADER = """\
# possim raw frames, dialect {dialect} (docs/replay.md "Raw frames"): '>' a request, '<' its recorded answer.
# Card data is redacted: PANs and tracks keep the PAN's first 6 and last 4 digits with zeros between,
# PIN blocks, sensitive chip tags and working keys are zeros. `possim replay` restores each request's
# PAN and track from cards.yaml (the one card with the same first 6, last 4 and length) before sending."""


class RawFileError(ValueError):
    """A .hex file that cannot be read: `FILE:LINE: …` (with `:COLUMN` for a bad character)."""


@dataclass(frozen=True)
class RawFrame:
    line: int
    """1-based line of the request in the file."""
    request: bytes
    """The whole frame, as recorded (card data redacted)."""
    recorded: bytes | None
    """The whole answer frame recorded for it; None when none was."""
    recorded_line: int | None


def read_hex(path: Path) -> list[RawFrame]:
    """Every request of a .hex file with the answer recorded under it, in file order."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise RawFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    frames: list[RawFrame] = []
    for number, line in enumerate(text.split("\n"), start=1):
        content = line.split("#", 1)[0]
        first = next((i for i, ch in enumerate(content) if not ch.isspace()), None)
        if first is None:
            continue
        marker = content[first] if content[first] in "<>" else ""
        data = _hex(path, number, content, first + len(marker), marker)
        if marker != "<":
            frames.append(RawFrame(number, data, None, None))
            continue
        if not frames:
            raise RawFileError(f"{path}:{number}: an answer ('<') with no request above it")
        last = frames[-1]
        if last.recorded is not None:
            raise RawFileError(
                f"{path}:{number}: a second answer to the request of line {last.line}"
                f" (its answer is on line {last.recorded_line})"
            )
        frames[-1] = replace(last, recorded=data, recorded_line=number)
    if not frames:
        raise RawFileError(f"{path}:1: no frames: every line is blank or a comment")
    return frames


def _hex(path: Path, number: int, content: str, start: int, marker: str) -> bytes:
    digits = []
    for column in range(start, len(content)):
        ch = content[column]
        if ch.isspace():
            continue
        if ch not in string.hexdigits:
            raise RawFileError(f"{path}:{number}:{column + 1}: {ch!r} is not a hex digit")
        digits.append(ch)
    if not digits:
        raise RawFileError(f"{path}:{number}: no hex after {marker!r}")
    if len(digits) % 2:
        raise RawFileError(f"{path}:{number}: {len(digits)} hex digits, an odd number: a frame is whole bytes")
    return bytes.fromhex("".join(digits))


def redact_frame(codec: Codec, frame: bytes) -> bytes:
    """A whole frame with its message's card data blanked; length header and envelope kept.

    The header is rebuilt only when the body's length changed, which
    happens only to a body the codec would not have encoded that way itself.
    """
    framing = codec.dialect.framing
    size, prefix = framing.length_size, framing.length_size + framing.envelope_size
    if len(frame) < prefix:
        raise RedactionError(
            f"frame of {len(frame)} bytes is shorter than its length header and envelope ({prefix} bytes)"
        )
    body = frame[prefix:]
    redacted = redact_body(codec, body)
    if len(redacted) == len(body):
        return frame[:prefix] + redacted
    return encode_length(framing, prefix - size + len(redacted)) + frame[size:prefix] + redacted


def write_hex(
    path: Path, exchanges: Iterable[tuple[bytes, bytes | None]], dialect: Dialect, comment: str | None = None
) -> None:
    """Write (request, answer) whole frames as a .hex file, card data redacted; answer None: none came.

    A frame that does not decode is not written (it may hold card data
    anywhere): a comment says which and why, and a request left out takes
    its answer with it. The file appears whole or not at all: it is written
    under a temporary name, then renamed.
    """
    path = Path(path)
    codec = Codec(dialect)
    lines = _HEADER.format(dialect=dialect.name).split("\n")
    lines += [f"# {text}".rstrip() for text in (comment or "").splitlines()]
    for index, (request, answer) in enumerate(exchanges, start=1):
        lines.append("")
        try:
            lines.append("> " + _spaced(codec, redact_frame(codec, request)))
        except RedactionError as exc:
            lines.append(f"# exchange {index}: request not written, nor its answer: {exc}")
            continue
        if answer is None:
            continue
        try:
            lines.append("< " + _spaced(codec, redact_frame(codec, answer)))
        except RedactionError as exc:
            lines.append(f"# exchange {index}: answer not written: {exc}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _spaced(codec: Codec, frame: bytes) -> str:
    """Length header, TPDU, dialect header and message as separate hex words, for a reader's eye."""
    framing = codec.dialect.framing
    cuts = [framing.length_size]
    if framing.tpdu is not None:
        cuts.append(cuts[-1] + 5)
    if framing.header:
        cuts.append(cuts[-1] + len(framing.header))
    parts = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)])]
    return " ".join(part.hex().upper() for part in parts if part)


def restore_message(message: Message, cards: Iterable[Card]) -> tuple[Message, str | None]:
    """A request with its card's PAN (field 2) and track 2 (field 35) back, and a note when it cannot be.

    The card is the one of `cards` whose blanked PAN is the message's. A PAN
    in clear, or no card data at all, leaves the message as it is without a
    note; a blanked PAN matching no card, or several, is sent as it is, and
    the host will decline it.
    """
    shown = message.get(2) or (track_pan(message[35]) if 35 in message else None)
    if not shown or blank_pan(shown) != shown:
        return message, None
    matches = [card for card in cards if blank_pan(card.pan) == shown]
    if len(matches) != 1:
        which = "no card" if not matches else f"{len(matches)} cards ({', '.join(c.name for c in matches)})"
        return message, f"PAN {mask_pan(shown)} matches {which} of cards.yaml: sent redacted, the host will decline it"
    card = matches[0]
    restored = Message(message.mti, dict(message.fields))
    if 2 in restored:
        restored[2] = card.pan
    if 35 in restored:
        restored[35] = card.track2
    return restored, None


def restore_body(codec: Codec, body: bytes, cards: Iterable[Card]) -> bytes:
    """`restore_message` on a message body; CodecError when the body does not decode."""
    return codec.encode(restore_message(codec.decode(body), cards)[0])


@dataclass(frozen=True)
class FieldDiff:
    field: str
    """A field number, or "mti"."""
    recorded: str | None
    """Redacted as a trace shows it; None when the field was absent."""
    actual: str | None

    @property
    def message(self) -> str:
        """`field 39: recorded '00', got '51' (insufficient funds)`."""
        name = "MTI" if self.field == "mti" else f"field {self.field}"
        was = f"{self.recorded!r}" if self.recorded is not None else "nothing"
        now = f"{self.actual!r}" if self.actual is not None else "nothing"
        meaning = f" ({response_text(self.actual)})" if self.field == "39" and self.actual is not None else ""
        return f"{name}: recorded {was}, got {now}{meaning}"

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "recorded": self.recorded, "actual": self.actual}


@dataclass(frozen=True)
class RawResult:
    line: int
    mti: str | None
    """The request's; None when it does not decode (it is sent all the same)."""
    stan: str | None
    differences: list[FieldDiff] = field(default_factory=list)
    error: str | None = None
    """Why the answer could not be compared: none came, it did not decode, the host could not be reached."""
    note: str | None = None
    """What the tester should know besides: a card that could not be restored, an answer not compared."""

    @property
    def passed(self) -> bool:
        return self.error is None and not self.differences

    @property
    def verdict(self) -> str:
        return "error" if self.error is not None else ("differs" if self.differences else "same")

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "mti": self.mti, "stan": self.stan, "verdict": self.verdict,
                "differences": [d.to_json() for d in self.differences], "error": self.error, "note": self.note}


@dataclass(frozen=True)
class RawReport:
    results: list[RawResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "frames": len(self.results), "same": self.count("same"),
                "differ": self.count("differs"), "errors": self.count("error"),
                "results": [r.to_json() for r in self.results]}


async def replay_raw(
    frames: list[RawFrame],
    address: tuple[str, int],
    dialect: Dialect,
    *,
    ignore: Set[int],
    timeout: float = 10.0,
    fixtures_dir: Path | None = None,
) -> RawReport:
    """Send each request in turn over one TCP link and diff its answer with the recorded one, fields in
    `ignore` left out. A frame that fails (no answer in time, an unreadable answer) is reported and the
    next one is sent: the link reconnects by itself."""
    codec = Codec(dialect)
    cards = list(fixture_cards(fixtures_dir).values())
    link = TcpLink(address[0], address[1], dialect.framing)
    try:
        return RawReport([await _replay(link, codec, frame, cards, ignore, timeout) for frame in frames])
    finally:
        await link.close()


async def _replay(
    link: TcpLink, codec: Codec, frame: RawFrame, cards: list[Card], ignore: Set[int], timeout: float
) -> RawResult:
    framing = codec.dialect.framing
    size, prefix = framing.length_size, framing.length_size + framing.envelope_size
    request, note = frame.request, None
    message = _decoded(codec, frame.request[prefix:]) if len(frame.request) >= prefix else None
    if message is not None:
        restored, note = restore_message(message, cards)
        if restored is not message:
            body = codec.encode(restored)
            request = encode_length(framing, prefix - size + len(body)) + frame.request[size:prefix] + body
    mti, stan = (message.mti, message.get(11)) if message is not None else (None, None)
    try:
        payload = await link.exchange(request, timeout)
    except LinkTimeout as exc:
        if frame.recorded is None:
            return RawResult(frame.line, mti, stan, note=_joined(note, "no answer, and none was recorded"))
        return RawResult(frame.line, mti, stan, error=str(exc), note=note)
    except (LinkError, FramingError) as exc:
        return RawResult(frame.line, mti, stan, error=str(exc), note=note)
    if frame.recorded is None:
        return RawResult(frame.line, mti, stan, note=_joined(note, "no answer was recorded: this one is not compared"))
    try:
        actual = codec.decode(answer_body(framing, payload))
    except (CodecError, FramingError) as exc:
        return RawResult(frame.line, mti, stan, error=f"answer does not decode: {exc}", note=note)
    try:
        recorded = codec.decode(frame.recorded[prefix:])
    except CodecError as exc:
        error = f"recorded answer (line {frame.recorded_line}) does not decode: {exc}"
        return RawResult(frame.line, mti, stan, error=error, note=note)
    dialect = codec.dialect
    differences = _differences(redact_message(dialect, recorded), redact_message(dialect, actual), ignore)
    return RawResult(frame.line, mti, stan, differences, note=note)


def _decoded(codec: Codec, body: bytes) -> Message | None:
    try:
        return codec.decode(body)
    except CodecError:
        return None


def _joined(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def _differences(recorded: Message, actual: Message, ignore: Set[int]) -> list[FieldDiff]:
    """MTI, then every field either has, by number; both sides already blanked alike, so card data compares."""
    differences = []
    if recorded.mti != actual.mti:
        differences.append(FieldDiff("mti", recorded.mti, actual.mti))
    for number in sorted((set(recorded.fields) | set(actual.fields)) - set(ignore)):
        was, now = recorded.get(number), actual.get(number)
        if was != now:
            differences.append(FieldDiff(str(number), _shown(number, was), _shown(number, now)))
    return differences


def _shown(number: int, value: str | None) -> str | None:
    return redact_value(number, value) if value is not None else None


def render(report: RawReport) -> str:
    """One line a frame (`line 3 0200 STAN 000012: same`), the differing fields under it, then a summary."""
    lines = []
    for result in report.results:
        head = f"line {result.line} {result.mti or '????'} STAN {result.stan or '??????'}"
        if result.error is not None:
            lines.append(f"{head}: error: {result.error}")
        elif result.differences:
            count = len(result.differences)
            lines.append(f"{head}: {count} field{'s' if count > 1 else ''} differ{'' if count > 1 else 's'}")
            lines += [f"  {d.message}" for d in result.differences]
        else:
            lines.append(f"{head}: same")
        if result.note:
            lines.append(f"  note: {result.note}")
    verdict = "passed" if report.passed else "FAILED"
    lines.append(
        f"{len(report.results)} frames: {report.count('same')} same, {report.count('differs')} differ,"
        f" {report.count('error')} errors: {verdict}"
    )
    return "\n".join(lines)
