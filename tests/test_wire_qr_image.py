"""Payment QR symbols: every image we draw scans back (with zxing-cpp, an
independent decoder) to exactly the payload's UTF-8 bytes, at error
correction level M, in Byte mode, with a 4-module quiet zone."""

from __future__ import annotations

import binascii
import io

import pytest
import zxingcpp
from PIL import Image

from possim.wire.emv_cpm import encode_cpm
from possim.wire.qr_image import qr_png, qr_text, read_qr_png, terminal_screen_png


def tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def mpm(name: str, local_name: str | None = None) -> str:
    """A dynamic EMV MPM payload, its CRC-16/CCITT-FALSE (poly 1021, init FFFF) computed by binascii."""
    body = (
        tlv("00", "01")
        + tlv("01", "12")
        + tlv("26", tlv("00", "A000000677010111") + tlv("01", "0066812345678") + tlv("02", "MERCHANT-ACCOUNT-0001"))
        + tlv("29", tlv("00", "D156000000000") + tlv("01", "ABCDEFGHIJ1234567890ZYXW"))
        + tlv("52", "5812")
        + tlv("53", "764")
        + tlv("54", "1234.50")
        + tlv("58", "TH")
        + tlv("59", name)
        + tlv("60", "BANGKOK")
        + tlv("61", "10110")
        + tlv("62", tlv("01", "INV-2026-000123") + tlv("05", "REF0000098765") + tlv("07", "TERMINAL01"))
    )
    if local_name is not None:
        body += tlv("64", tlv("00", "TH") + tlv("01", local_name) + tlv("02", "กรุงเทพ"))
    body += "6304"
    return body + f"{binascii.crc_hqx(body.encode('utf-8'), 0xFFFF):04X}"


LONG_MPM = mpm("THE LONG NOODLE HOUSE SUKHUMVIT")
PAYLOADS = {
    "short": "hello",
    "cpm": encode_cpm(
        aid="A0000000031010", pan="4761739001010010", expiry="2712", label="VISA", cardholder_name="TEST/CARD"
    ),
    "long_mpm": LONG_MPM,
    "thai_mpm": mpm("RAN AHAN", "ร้านอาหาร"),
    "chinese": (
        "00020101021229300012D156000000000510A93FO3230Q5802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104北京餐厅"
    ),
}


def zxing_read(png: bytes) -> zxingcpp.Result:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1
    return results[0]


def test_long_payload_is_long():
    assert len(LONG_MPM) >= 250


@pytest.mark.parametrize("name", PAYLOADS)
def test_plain_symbol_scans_back_byte_for_byte(name):
    payload = PAYLOADS[name]
    png = qr_png(payload)
    result = zxing_read(png)
    assert result.bytes == payload.encode("utf-8")
    assert result.ec_level == "M"
    assert result.symbology_identifier == "]Q1"  # ISO/IEC 18004 model 2, no ECI designator
    assert read_qr_png(png) == payload


@pytest.mark.parametrize("name", PAYLOADS)
def test_terminal_screen_scans_back_byte_for_byte(name):
    payload = PAYLOADS[name]
    png = terminal_screen_png(
        payload, amount="THB 1,234.50", merchant="ร้านอาหาร 北京餐厅", caption="Scan to pay"
    )
    assert zxing_read(png).bytes == payload.encode("utf-8")
    assert read_qr_png(png) == payload


def test_terminal_screen_draws_text_under_the_code():
    plain = Image.open(io.BytesIO(qr_png("hello")))
    screen = Image.open(io.BytesIO(terminal_screen_png("hello", amount="EUR 1.00", merchant="Café")))
    bare = Image.open(io.BytesIO(terminal_screen_png("hello", amount=None, merchant="Café")))
    assert screen.height > bare.height > plain.height
    below = screen.convert("L").crop((0, plain.height, screen.width, screen.height))
    assert below.getextrema()[0] == 0  # something dark was drawn under the symbol


def test_payload_is_one_byte_mode_segment_at_level_m():
    # 100 digits: numeric mode at M fits version 3 (29 modules); Byte mode needs
    # version 6 at M (106 bytes; version 5 holds 84) but version 5 at L (106 bytes).
    # Capacities from the ISO/IEC 18004 table. 41 modules + 2 x 4 quiet zone = 49.
    text = qr_text("0123456789" * 10)
    assert len(text.splitlines()[0]) == 49


def test_quiet_zone_is_four_modules():
    box = 8
    image = Image.open(io.BytesIO(qr_png("hello", box_size=box))).convert("L")
    margin = 4 * box
    assert image.crop((0, 0, image.width, margin)).getextrema() == (255, 255)
    assert image.crop((0, 0, margin, image.height)).getextrema() == (255, 255)
    assert image.getpixel((margin, margin)) == 0  # the top-left finder pattern starts right after it


def test_border_smaller_than_the_quiet_zone_is_refused():
    with pytest.raises(ValueError, match="border"):
        qr_png("hello", border=2)


def modules_from_text(text: str) -> list[list[bool]]:
    """Dark modules back from qr_text: a block half is light, a blank half dark."""
    halves = {"█": (False, False), "▀": (False, True), "▄": (True, False), " ": (True, True)}
    rows = []
    for line in text.splitlines():
        pairs = [halves[ch] for ch in line]
        rows.append([top for top, _ in pairs])
        rows.append([bottom for _, bottom in pairs])
    return rows


@pytest.mark.parametrize("name", ["short", "long_mpm", "thai_mpm"])
def test_qr_text_dimensions_reproducibility_and_content(name):
    payload = PAYLOADS[name]
    version = int(zxing_read(qr_png(payload)).extra["Version"])
    size = 17 + 4 * version + 2 * 4  # ISO/IEC 18004 module count, plus the quiet zone
    text = qr_text(payload)
    lines = text.splitlines()
    assert len(lines) == (size + 1) // 2
    assert {len(line) for line in lines} == {size}
    assert set(text) <= set("▀▄█ \n")
    assert qr_text(payload) == text
    # Redraw the modules the text shows and scan them.
    rows = modules_from_text(text)[:size]
    image = Image.new("L", (size, size))
    image.putdata([0 if dark else 255 for row in rows for dark in row])
    out = io.BytesIO()
    image.resize((size * 6, size * 6), Image.Resampling.NEAREST).save(out, format="PNG")
    assert read_qr_png(out.getvalue()) == payload


def test_read_blank_image_raises():
    out = io.BytesIO()
    Image.new("L", (200, 200), 255).save(out, format="PNG")
    with pytest.raises(ValueError, match="no QR code"):
        read_qr_png(out.getvalue())


def test_read_non_image_raises():
    with pytest.raises(ValueError, match="not a readable image"):
        read_qr_png(b"not a png")
