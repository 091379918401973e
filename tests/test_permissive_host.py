"""The permissive host profile (`possim host run --permissive`, docs/permissive.md) over real TCP.

The client is what a third-party ISO 8583 tool is: pyiso8583 with a spec of
its own (pyiso8583's stock `default_ascii` for iso87ascii; for iso87binary
the spec `possim dialect show iso87binary` publishes), a 2-byte length and a
socket — no sign-on, a terminal ID and cards the fixtures have never heard
of. Where a MAC key is needed, the terminal is the suite's TestTerminal,
which signs on like a real one and MACs with the downloaded key.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import iso8583
import iso8583.specs
import pytest

from possim.acquirer.core import build_host
from possim.acquirer.permissive import ACCOUNT_ID, DEFAULT_LIMIT, PermissiveSettings
from possim.acquirer.pipeline import luhn_ok
from possim.fixtures import FixtureError
from possim.wire.batch_totals import BatchTotals, Totals, set_iso_totals
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import frame
from possim.wire.message import Message

from host_support import (
    CARDS, DIALECTS, MID, OPENING, START, TID, RunningHost, host_clock, luhn_complete, purchase, running_host, sign_on,
)

POSSIM = [sys.executable, "-m", "possim.cli"]
ISO87 = ("iso87ascii", "iso87binary")
TOOL_SPECS: dict[str, dict[str, Any]] = {
    "iso87ascii": iso8583.specs.default_ascii,
    "iso87binary": load_dialect("iso87binary").spec,
}
"""The spec each tool was configured with; PIN and MAC fields need the dialect's own (binary 52 and 64)."""
TOOL_TID = "LOADT001"
PAN = luhn_complete("476173900101001")
"""Luhn-valid, on no issuer's BIN list, in no fixture."""
BAD_LUHN = PAN[:-1] + str((int(PAN[-1]) + 1) % 10)
SENT = START.strftime("%m%d%H%M%S")
"""Field 7, as the tool stamps it (the host's clock starts at START)."""


class Tool:
    """A third-party test tool's connection: pyiso8583 documents in and out, 2-byte binary length framing."""

    def __init__(self, port: int, spec: dict[str, Any]):
        self.spec = spec
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def exchange(self, doc: dict[str, Any]) -> dict[str, Any]:
        raw, _ = iso8583.encode(dict(doc), self.spec)
        self.sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))
        size = struct.unpack(">H", self._read(2))[0]
        answer, _ = iso8583.decode(self._read(size), self.spec)
        return answer

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("host closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def sale(stan: str, amount: int = 1250, pan: str = PAN, expiry: str = "3012", tid: str = TOOL_TID, **extra: Any) -> dict[str, Any]:
    """A keyed 0200 sale as a load tool sends it: no merchant ID, no MAC."""
    return {"t": "0200", "2": pan, "3": "000000", "4": f"{amount:012d}", "7": SENT, "11": stan, "14": expiry,
            "22": "012", "25": "00", "41": tid, "49": "156", **extra}


def swiped(stan: str, amount: int = 1250, pan: str = PAN, expiry: str = "3012") -> dict[str, Any]:
    doc = {k: v for k, v in sale(stan, amount).items() if k not in ("2", "14")}
    return {**doc, "22": "022", "35": f"{pan}D{expiry}2010000000"}


@contextmanager
def permissive_host(tmp_path: Path, dialect: str, **settings: Any) -> Iterator[RunningHost]:
    core = build_host(dialect, tmp_path / "journal.sqlite", clock=host_clock(), permissive=PermissiveSettings(**settings))
    with running_host(tmp_path, dialect, core=core) as host:
        yield host


@contextmanager
def tool(host: RunningHost, spec: dict[str, Any] | None = None) -> Iterator[Tool]:
    client = Tool(host.port, spec or TOOL_SPECS[host.dialect.name])
    try:
        yield client
    finally:
        client.close()


def rows(host: RunningHost) -> dict[str, Any]:
    """Journal rows by STAN."""
    journal = host.journal()
    try:
        return {t.stan: t for t in journal.transactions()}
    finally:
        journal.close()


# ---- a third-party tool, no sign-on, unknown terminal, unknown cards ----


@pytest.mark.parametrize("dialect", ISO87)
def test_an_unknown_tool_terminal_gets_any_luhn_valid_card_approved_without_sign_on(tmp_path, dialect) -> None:
    with permissive_host(tmp_path, dialect) as host, tool(host) as client:
        keyed = client.exchange(sale("000001"))
        track = client.exchange(swiped("000002", amount=2000))
        with_merchant = client.exchange({**sale("000003", amount=300), "42": "TOOLMERCHANT001"})
        balance = host.balance(ACCOUNT_ID)
        journaled = rows(host)
    for answer in (keyed, track, with_merchant):
        assert answer["t"] == "0210" and answer["39"] == "00"
        assert answer["41"] == TOOL_TID and len(answer["38"]) == 6 and len(answer["37"]) == 12
        assert "2" not in answer and "35" not in answer
    assert keyed["4"] == "000000001250" and track["4"] == "000000002000"
    assert with_merchant["42"] == "TOOLMERCHANT001" and "42" not in keyed
    masked = PAN[:6] + "*" * (len(PAN) - 10) + PAN[-4:]
    assert [(r.terminal_id, r.status, r.response_code, r.pan_masked, r.account_id, r.amount, r.rrn)
            for r in journaled.values()] == [
        (TOOL_TID, "approved", "00", masked, ACCOUNT_ID, 1250, keyed["37"]),
        (TOOL_TID, "approved", "00", masked, ACCOUNT_ID, 2000, track["37"]),
        (TOOL_TID, "approved", "00", masked, ACCOUNT_ID, 300, with_merchant["37"]),
    ]
    assert journaled["000003"].merchant_id == "TOOLMERCHANT001" and journaled["000001"].merchant_id is None
    assert balance == -(1250 + 2000 + 300)


def test_a_cup_tool_terminal_is_approved_without_sign_on(tmp_path) -> None:
    with permissive_host(tmp_path, "cup") as host, host.terminal() as terminal:
        answer = terminal.exchange(purchase(host.dialect, "000001", tid=TOOL_TID, mid="TOOLMERCHANT001", pan=PAN))
        assert answer.mti == "0210" and answer[39] == "00" and answer[41] == TOOL_TID
        row = rows(host)["000001"]
    assert row.status == "approved" and row.account_id == ACCOUNT_ID and row.batch_number == "000001"
    assert row.pan_masked == PAN[:6] + "******" + PAN[-4:]


@pytest.mark.parametrize("dialect", ISO87)
def test_over_the_limit_is_61_and_a_bad_luhn_14(tmp_path, dialect) -> None:
    with permissive_host(tmp_path, dialect, limit=50000) as host, tool(host) as client:
        at_limit = client.exchange(sale("000001", amount=50000))
        above = client.exchange(sale("000002", amount=50001))
        bad = client.exchange(sale("000003", pan=BAD_LUHN))
        bad_track = client.exchange(swiped("000004", pan=BAD_LUHN))
        balance = host.balance(ACCOUNT_ID)
        journaled = rows(host)
    assert not luhn_ok(BAD_LUHN)
    assert [a["39"] for a in (at_limit, above, bad, bad_track)] == ["00", "61", "14", "14"]
    assert "38" not in above and "38" not in bad
    assert [(r.status, r.decline_step) for r in journaled.values()] == [
        ("approved", None), ("declined", "within_limit"), ("declined", "card_number"), ("declined", "card_number"),
    ]
    assert balance == -50000  # declines take nothing


def test_the_default_limit_is_ten_thousand_in_major_units(tmp_path) -> None:
    assert DEFAULT_LIMIT == 1_000_000
    with permissive_host(tmp_path, "iso87ascii") as host, tool(host) as client:
        codes = [client.exchange(sale(f"00000{n}", amount=amount))["39"]
                 for n, amount in enumerate((1_000_000, 1_000_001), start=1)]
    assert codes == ["00", "61"]


@pytest.mark.parametrize("dialect", ISO87)
def test_expiry_is_ignored_by_default_and_54_when_checked(tmp_path, dialect) -> None:
    expired = "2001"  # January 2020; the host's clock is in June 2026
    (tmp_path / "default").mkdir()
    with permissive_host(tmp_path / "default", dialect) as host, tool(host) as client:
        ignored = [client.exchange(sale("000001", expiry=expired))["39"],
                   client.exchange(swiped("000002", expiry=expired))["39"],
                   client.exchange({k: v for k, v in sale("000003").items() if k != "14"})["39"]]
    (tmp_path / "checking").mkdir()
    with permissive_host(tmp_path / "checking", dialect, check_expiry=True) as host, tool(host) as client:
        checked = [client.exchange(sale("000001", expiry=expired))["39"],
                   client.exchange(swiped("000002", expiry=expired))["39"],
                   client.exchange(sale("000003", expiry="3012"))["39"],
                   client.exchange({k: v for k, v in sale("000004").items() if k != "14"})["39"]]
        journaled = rows(host)
    assert ignored == ["00", "00", "00"]  # no expiry at all is fine too when none is checked
    assert checked == ["54", "54", "00", "30"]
    assert journaled["000001"].decline_step == "card_expiry"
    assert journaled["000004"].decline_reason == "missing mandatory field 14"


def test_fixture_cards_are_not_consulted(tmp_path) -> None:
    """The fixtures' lost, issuer-down and insufficient-funds cards are just Luhn-valid PANs here."""
    names = ("lost", "issuer-down", "insufficient", "over-limit")
    with permissive_host(tmp_path, "iso87binary") as host, tool(host) as client:
        codes = {name: client.exchange(sale(f"00000{n}", amount=20000, pan=CARDS[name]["pan"]))["39"]
                 for n, name in enumerate(names, start=1)}
        opening_untouched = {a: host.balance(a) for a in ("A-1002", "A-1003")}
    assert codes == dict.fromkeys(names, "00")
    assert opening_untouched == {"A-1002": OPENING["A-1002"], "A-1003": OPENING["A-1003"]}


@pytest.mark.parametrize("dialect", ISO87)
def test_a_pin_from_an_unknown_terminal_is_not_verified(tmp_path, dialect) -> None:
    """No key to decrypt it, no PIN reference for the card: the documented choice is to approve without it."""
    spec = load_dialect(dialect).spec
    with permissive_host(tmp_path, dialect) as host, tool(host, spec) as client:
        answer = client.exchange(sale("000001", **{"52": "0123456789ABCDEF", "53": "2600000000000000"}))
        journal = host.journal()
        try:
            logged = " ".join(str(m.fields) for m in journal.messages(TOOL_TID))
        finally:
            journal.close()
    assert answer["39"] == "00" and "52" not in answer
    assert "0123456789ABCDEF" not in logged.upper() and PAN not in logged


# ---- MAC: checked when present and the terminal has a key ----


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_mac_is_checked_when_sent_and_not_required(tmp_path, dialect) -> None:
    with permissive_host(tmp_path, dialect) as host, host.terminal() as terminal:
        d = host.dialect
        assert terminal.exchange(sign_on(d, "000001"))[39] == "00"
        assert TID in terminal.mac_keys  # the fixture terminal got working keys under its master key
        good = terminal.exchange(purchase(d, "000002", pan=PAN))
        tampered = bytearray(terminal.framed(purchase(d, "000003", pan=PAN)))
        tampered[-1] ^= 0x01  # the MAC is the frame's last byte
        terminal.send_raw(bytes(tampered))
        wrong = terminal.receive()
        terminal.send_raw(frame(d.framing, terminal.codec.encode(purchase(d, "000004", pan=PAN))))
        absent = terminal.receive()
        journaled = rows(host)
    assert good[39] == "00" and absent[39] == "00"
    assert wrong[39] == d.response_code("mac_error") and "38" not in wrong
    assert journaled["000003"].status == "declined" and journaled["000003"].decline_step == "mac"
    assert journaled["000003"].posted_amount == 0
    assert good[64] is not None and absent[64] is not None  # answers to a terminal with a key carry a MAC


@pytest.mark.parametrize("dialect", ISO87)
def test_a_mac_from_a_terminal_without_keys_cannot_be_checked_and_is_accepted(tmp_path, dialect) -> None:
    spec = load_dialect(dialect).spec
    with permissive_host(tmp_path, dialect) as host, tool(host, spec) as client:
        answer = client.exchange(sale("000001", **{"64": "00" * 8}))  # the tool's own MAC key: unknown to the host
    assert answer["39"] == "00" and "64" not in answer


def test_an_unknown_terminal_signs_on_without_keys(tmp_path) -> None:
    with permissive_host(tmp_path, "iso87ascii") as host, host.terminal() as terminal:
        answer = terminal.exchange(sign_on(host.dialect, "000001", tid=TOOL_TID, mid="TOOLMERCHANT001"))
        journal = host.journal()
        try:
            session = journal.terminal(TOOL_TID)
        finally:
            journal.close()
    assert answer.mti == "0810" and answer[39] == "00" and 62 not in answer
    assert session is not None and session.mac_key is None and session.signed_on_date == "2026-06-15"


# ---- reversals, voids, refunds ----


@pytest.mark.parametrize("dialect", ISO87)
def test_a_reversal_undoes_a_permissive_purchase(tmp_path, dialect) -> None:
    with permissive_host(tmp_path, dialect) as host, tool(host) as client:
        bought = client.exchange(sale("000001", amount=4200))
        taken = host.balance(ACCOUNT_ID)
        reversal = {"t": "0400", "3": "000000", "4": f"{4200:012d}", "7": SENT, "11": "000002", "22": "012",
                    "25": "00", "39": "98", "41": TOOL_TID, "49": "156", "90": f"0200000001{SENT}" + "0" * 22}
        reversed_ = client.exchange(reversal)
        again = client.exchange(reversal)  # a repeated reversal gives back nothing twice
        row = rows(host)["000001"]
        balance = host.balance(ACCOUNT_ID)
    assert bought["39"] == "00" and taken == -4200
    assert reversed_["t"] == "0410" and reversed_["39"] == "00" and again["39"] == "00"
    assert row.status == "reversed" and row.reversal_stan == "000002"
    assert balance == 0


def test_voids_and_refunds_work_on_permissive_sales(tmp_path) -> None:
    with permissive_host(tmp_path, "iso87ascii") as host, tool(host) as client:
        first = client.exchange(sale("000001", amount=5000))
        second = client.exchange(sale("000002", amount=700))
        refund = client.exchange({**sale("000003", amount=1500), "t": "0220", "3": "200000", "37": first["37"]})
        too_much = client.exchange({**sale("000004", amount=3501), "t": "0220", "3": "200000", "37": first["37"]})
        void = client.exchange({**sale("000005", amount=700), "3": "020000", "37": second["37"]})
        void_again = client.exchange({**sale("000006", amount=700), "3": "020000", "37": second["37"]})
        journaled = rows(host)
        balance = host.balance(ACCOUNT_ID)
    assert [a["39"] for a in (first, second, refund, too_much, void, void_again)] == ["00", "00", "00", "13", "00", "12"]
    assert journaled["000001"].refunded_amount == 1500 and journaled["000002"].status == "voided"
    assert balance == -5000 + 1500  # the voided sale gave its 700 back


def test_a_sale_the_standard_profile_approved_is_refunded_to_its_own_account(tmp_path) -> None:
    with running_host(tmp_path, "iso87ascii") as host, host.terminal() as terminal:
        assert terminal.exchange(sign_on(host.dialect, "000001"))[39] == "00"
        sold = terminal.exchange(purchase(host.dialect, "000002", card="approve", amount=3000, keyed=True))
    assert sold[39] == "00"
    card = CARDS["approve"]
    # that terminal holds a MAC key now, so answers carry a binary MAC: the tool needs the dialect's field 64
    with permissive_host(tmp_path, "iso87ascii") as host, tool(host, load_dialect("iso87ascii").spec) as client:
        refund = client.exchange({**sale("000003", amount=1000, pan=card["pan"], expiry=card["expiry"], tid=TID),
                                  "t": "0220", "3": "200000", "37": sold[37], "42": MID})
        balances = host.balance("A-1001"), host.balance(ACCOUNT_ID)
    assert refund["39"] == "00"
    assert balances == (OPENING["A-1001"] - 3000 + 1000, 0)


def test_sales_before_a_sign_on_are_in_the_batch_it_opens_and_close_with_it(tmp_path) -> None:
    """Batch close still needs a sign-on; the sales a terminal made before it count in the batch the sign-on opens."""
    with permissive_host(tmp_path, "iso87ascii") as host, host.terminal() as terminal:
        d = host.dialect
        for stan, amount in (("000001", 1000), ("000002", 2000)):
            assert terminal.exchange(purchase(d, stan, tid=TOOL_TID, mid="TOOLMERCHANT001", pan=PAN, amount=amount))[39] == "00"
        totals = BatchTotals(domestic=Totals(debit_count=2, debit_amount=3000))
        too_early = terminal.exchange(batch_close(d, "000003", totals))
        assert terminal.exchange(sign_on(d, "000004", tid=TOOL_TID, mid="TOOLMERCHANT001"))[39] == "00"
        closed = terminal.exchange(batch_close(d, "000005", totals))
        journal = host.journal()
        try:
            record, session = journal.closed_batch(TOOL_TID, "000001"), journal.terminal(TOOL_TID)
        finally:
            journal.close()
    assert too_early[39] == d.response_code("not_signed_on")
    assert closed[39] == "00"  # in balance
    assert record is not None and record.balanced and session is not None and session.batch_number == "000002"


def batch_close(d: Dialect, stan: str, totals: BatchTotals) -> Message:
    message = Message("0500", {7: SENT, 11: stan, 41: TOOL_TID, 42: "TOOLMERCHANT001"})
    set_iso_totals(message, totals, SENT[:4])
    return message


# ---- the standard profile is unchanged ----


@pytest.mark.parametrize("dialect", DIALECTS)
def test_without_permissive_an_unknown_terminal_is_still_refused(tmp_path, dialect) -> None:
    with running_host(tmp_path, dialect) as host, host.terminal() as terminal:
        d = host.dialect
        unknown = terminal.exchange(purchase(d, "000001", tid=TOOL_TID, mid="TOOLMERCHANT001", pan=PAN))
        not_signed_on = terminal.exchange(purchase(d, "000002", pan=PAN))
        assert terminal.exchange(sign_on(d, "000003"))[39] == "00"
        unknown_card = terminal.exchange(purchase(d, "000004", pan=PAN))
        journaled = rows(host)
        permissive_account = host.balance(ACCOUNT_ID)
    assert unknown[39] == d.response_code("terminal_unknown")
    assert not_signed_on[39] == d.response_code("not_signed_on")
    assert unknown_card[39] == "15"  # no issuer for its BIN
    assert journaled["000001"].decline_step == "terminal_signed_on"
    assert permissive_account is None  # the standard profile opens no permissive account


# ---- settings and the command line ----


def test_host_yaml_permissive_section_is_read_and_checked(tmp_path) -> None:
    (tmp_path / "host.yaml").write_text("permissive:\n  limit: 5000\n  check_expiry: true\n")
    assert PermissiveSettings.from_fixtures(tmp_path) == PermissiveSettings(limit=5000, check_expiry=True)
    (tmp_path / "host.yaml").write_text("permissive:\n  check_expiry: sometimes\n")
    with pytest.raises(FixtureError, match=r"host.yaml: permissive.check_expiry must be true or false"):
        PermissiveSettings.from_fixtures(tmp_path)
    (tmp_path / "host.yaml").write_text("permissive:\n  limit: 12.5\n")
    with pytest.raises(FixtureError, match=r"host.yaml: permissive.limit must be a whole number"):
        PermissiveSettings.from_fixtures(tmp_path)
    (tmp_path / "host.yaml").write_text("permissive:\n  limits: 100\n")
    with pytest.raises(FixtureError, match=r"host.yaml: permissive.limits is not a setting"):
        PermissiveSettings.from_fixtures(tmp_path)


@contextmanager
def host_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`possim host run ARGS` in its own process; yields it and its first stdout line."""
    process = subprocess.Popen([*POSSIM, "host", "run", "--listen", "127.0.0.1:0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_cli_permissive_start_line_and_limit(tmp_path) -> None:
    db = tmp_path / "journal.sqlite"
    with host_process("--dialect", "iso87ascii", "--db", str(db), "--permissive", "--permissive-limit", "1000.00",
                      "--json") as (_, line):
        ready = json.loads(line)
        port = int(ready["listening"].rsplit(":", 1)[1])
        client = Tool(port, TOOL_SPECS["iso87ascii"])
        try:
            codes = [client.exchange(sale("000001", amount=100000))["39"],
                     client.exchange(sale("000002", amount=100001))["39"]]
        finally:
            client.close()
    assert ready["profile"] == "permissive"
    assert ready["permissive"] == {"limit": 100000, "check_expiry": False}
    assert codes == ["00", "61"]


def test_cli_start_lines_name_the_profile(tmp_path) -> None:
    with host_process("--db", str(tmp_path / "a.sqlite"), "--permissive", "--check-expiry") as (_, line):
        permissive_text = line
    with host_process("--db", str(tmp_path / "b.sqlite"), "--json") as (_, line):
        standard = json.loads(line)
    assert "(cup, permissive profile: any terminal, Luhn-valid cards up to 10000.00, expiry checked)" in permissive_text
    assert standard["profile"] == "standard" and standard["permissive"] is None


def test_cli_permissive_options_need_permissive(tmp_path) -> None:
    for args in (["--permissive-limit", "5.00"], ["--check-expiry"], ["--permissive", "--permissive-limit", "1.005"],
                 ["--permissive", "--permissive-limit", "0"]):
        result = subprocess.run([*POSSIM, "host", "run", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "j.sqlite"), *args],
                                capture_output=True, text=True, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("possim: error: "), result.stderr
        assert ("--permissive-limit" in lines[0]) or ("--check-expiry" in lines[0])
    assert not (tmp_path / "j.sqlite").exists()  # refused before the journal was opened
