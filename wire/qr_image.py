"""Payment QR symbols as images and terminal text, and reading them back.

Symbol rules followed (EMVCo QR specs, MPM §3.1 "QR Code Conventions"):

- ISO/IEC 18004 QR Code, Byte mode for the whole payload: EMVCo says the
  payload "shall" be Byte mode, no mixing of numeric/alphanumeric segments
  (quoted in github.com/zxing/zxing issue #1100). A QR library left to
  itself splits a payload into its most compact modes, so Byte mode is
  asked for explicitly.
- Error correction level M: at least the level EMVCo asks for; the public
  EMV MPM generator at dynamsoft.com/codepool/demos/emv-qr-generator renders
  at M too.
- Quiet zone of 4 modules (ISO/IEC 18004:2015 §6.3.8); a smaller border is refused.
- The payload's bytes are its UTF-8 encoding (EMV MPM uses UTF-8 for the
  merchant information language template), and a payload that is not
  plain ASCII is preceded by the ECI designator 26 (UTF-8), so a reader
  need not guess the charset. qrcode 8.2 cannot write an ECI designator (it
  knows numeric, alphanumeric and byte modes only), so symbols are made with
  segno, which can; ASCII payloads carry no ECI, as EMVCo's examples do not.
"""

from __future__ import annotations

import functools
import io
import unicodedata
from pathlib import Path

import segno
import zxingcpp
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

QUIET_ZONE = 4
"""Modules of light margin ISO/IEC 18004 requires around a QR symbol."""
ERROR_CORRECTION = "m"
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
PREFERRED_FONTS = ("NotoSansCJK", "NotoSansSC", "NotoSansThai", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
"""Font file names tried first for terminal screens: wide coverage, then a common Latin face."""
SCREEN_MARGIN = 16
TEXT_SIZE = 28
CAPTION_SIZE = 20


def qr_png(payload: str, *, box_size: int = 8, border: int = QUIET_ZONE) -> bytes:
    """The PNG of the payload's symbol: dark modules black, `box_size` pixels each, `border` modules of quiet zone."""
    if box_size < 1:
        raise ValueError(f"box_size {box_size}: a module needs at least 1 pixel")
    if border < QUIET_ZONE:
        raise ValueError(f"border {border}: the quiet zone must be at least {QUIET_ZONE} modules (ISO/IEC 18004)")
    return _png(_symbol_image(payload, box_size, border))


def terminal_screen_png(payload: str, *, amount: str | None, merchant: str, caption: str | None = None) -> bytes:
    """A terminal screen: the symbol, then the merchant name, the amount (if any) and a caption, centred.

    Text is drawn with the first installed font that has a glyph for every
    character; when none has them all (no CJK or Thai font installed), the
    font covering the most is used and missing characters show as its
    empty-box glyph. The symbol is unaffected either way.
    """
    symbol = _symbol_image(payload, 8, QUIET_ZONE)
    lines = [(merchant, TEXT_SIZE)]
    if amount is not None:
        lines.append((amount, TEXT_SIZE))
    if caption is not None:
        lines.append((caption, CAPTION_SIZE))
    fonts = [_font_for(text, size) for text, size in lines]
    boxes = [font.getbbox(text) for (text, _), font in zip(lines, fonts)]
    width = max([symbol.width] + [box[2] - box[0] + 2 * SCREEN_MARGIN for box in boxes])
    height = symbol.height + sum(size + SCREEN_MARGIN // 2 for _, size in lines) + SCREEN_MARGIN
    screen = Image.new("L", (width, height), 255)
    screen.paste(symbol, ((width - symbol.width) // 2, 0))
    draw = ImageDraw.Draw(screen)
    y = symbol.height
    for (text, size), font, box in zip(lines, fonts, boxes):
        draw.text(((width - (box[2] - box[0])) // 2 - box[0], y), text, fill=0, font=font)
        y += size + SCREEN_MARGIN // 2
    return _png(screen)


def qr_text(payload: str) -> str:
    """The symbol for a terminal window, quiet zone included: two module rows per line of text.

    Light modules are drawn with block characters and dark ones left blank,
    so on the usual dark-background terminal the code shows dark on light,
    as scanners expect. An odd last row leaves its lower half blank.
    """
    matrix = _matrix(payload, QUIET_ZONE)
    rows = matrix + [[True] * len(matrix[0])] if len(matrix) % 2 else matrix
    glyphs = {(False, False): "█", (False, True): "▀", (True, False): "▄", (True, True): " "}
    return "\n".join(
        "".join(glyphs[top, bottom] for top, bottom in zip(rows[i], rows[i + 1])) for i in range(0, len(rows), 2)
    )


def read_qr_png(png: bytes) -> str:
    """The text of the first QR symbol in a PNG (or any image Pillow reads), decoded with zxing-cpp.

    The symbol's bytes are read as UTF-8, as EMV payloads are written; a
    symbol whose bytes are not UTF-8 gets zxing-cpp's own charset guess.
    """
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"png: not a readable image ({error})") from None
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    if not results:
        raise ValueError("png: no QR code found in the image")
    try:
        return results[0].bytes.decode("utf-8")
    except UnicodeDecodeError:
        return results[0].text


def _matrix(payload: str, border: int) -> list[list[bool]]:
    """Modules (True = dark) of the payload as one Byte-mode segment at level M, quiet zone included."""
    code = segno.make_qr(payload, error=ERROR_CORRECTION, mode="byte", encoding="utf-8", eci=not payload.isascii(),
                         boost_error=False)
    return [[bool(module) for module in row] for row in code.matrix_iter(scale=1, border=border)]


def _symbol_image(payload: str, box_size: int, border: int) -> Image.Image:
    matrix = _matrix(payload, border)
    size = len(matrix)
    image = Image.new("L", (size, size), 255)
    image.putdata([0 if dark else 255 for row in matrix for dark in row])
    return image.resize((size * box_size, size * box_size), Image.Resampling.NEAREST)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@functools.cache
def _font_files() -> tuple[Path, ...]:
    """Installed font files, PREFERRED_FONTS first."""
    suffixes = (".ttf", ".otf", ".ttc")
    found = {
        path for folder in FONT_DIRS if folder.is_dir() for path in folder.rglob("*") if path.suffix.lower() in suffixes
    }

    def rank(path: Path) -> tuple[int, str]:
        preferred = [i for i, name in enumerate(PREFERRED_FONTS) if path.name.startswith(name)]
        return (preferred[0] if preferred else len(PREFERRED_FONTS), str(path))

    return tuple(sorted(found, key=rank))


def _font_for(text: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The installed font missing the fewest glyphs of `text` (the first with none), else Pillow's default."""
    wanted = {ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("M")}
    best, best_missing = None, len(wanted) + 1
    for path in _font_files():
        try:
            font = ImageFont.truetype(str(path), size)
        except OSError:
            continue
        missing = sum(not _has_glyph(font, ch) for ch in wanted)
        if missing < best_missing:
            best, best_missing = font, missing
        if missing == 0:
            break
    return best if best is not None else ImageFont.load_default(size)


def _has_glyph(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    """Whether `ch` renders as something other than the font's missing-glyph box (Pillow has no direct test)."""
    return _mask(font, ch) != _mask(font, "\U0010fffd")


def _mask(font: ImageFont.FreeTypeFont, ch: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)
