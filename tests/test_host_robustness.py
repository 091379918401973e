"""The host under bad input, late answers, internal faults — and what it
writes down: no full PAN or track data in the journal, trace or logs."""

from __future__ import annotations

import logging
import random
import socket

import pytest

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.journal import REVERSED
from possim.acquirer.pipeline import STEPS, Context, Decline
from possim.acquirer.rules import Rules
from possim.fixtures import FixtureError
from possim.wire.framing import frame
from host_support import (
    CARDS, DIALECTS, OPENING, TestTerminal, host_clock, purchase, reversal, running_host, sign_on,
)


@pytest.fixture(params=DIALECTS)
def host(request, tmp_path):
    with running_host(tmp_path, request.param) as running:
        with running.terminal() as pos:
            assert pos.exchange(sign_on(running.dialect, "000001"))[39] == "00"
        yield running


def _still_approves(host, stan: str) -> None:
    with host.terminal() as pos:
        answer = pos.exchange(purchase(host.dialect, stan, amount=100))
    assert answer[39] == "00"


def _corrupt_field(terminal: TestTerminal, message, number: int) -> bytes:
    """A well-framed message whose field `number` holds a non-digit where digits belong."""
    body = bytearray(terminal.codec.encode(message))
    start, end = terminal.codec.spans(bytes(body))[str(number)]
    body[end - 1] = ord("X") if terminal.dialect.spec[str(number)]["data_enc"] != "b" else 0xAB
    return frame(terminal.dialect.framing, bytes(body))


def test_random_bytes_close_only_that_connection(host):
    with host.terminal() as bad:
        bad.send_raw(random.Random(8583).randbytes(300))
        assert bad.closed_by_host()
    _still_approves(host, "000010")


def test_length_longer_than_what_follows(host):
    with host.terminal() as bad:
        bad.send_raw((200).to_bytes(2, "big") + b"\x02\x00" * 10)
        _still_approves(host, "000010")  # while that frame is still incomplete
        assert bad.closed_by_host()  # the host gives up on it (partial frame timeout)
    _still_approves(host, "000011")


@pytest.mark.parametrize("header", [b"\xff\xff", b"\x00\x00"], ids=["64KB", "zero"])
def test_unacceptable_length_header(host, header):
    with host.terminal() as bad:
        bad.send_raw(header + b"\x00" * 40)
        assert bad.closed_by_host()
    _still_approves(host, "000010")


def test_undecodable_field_is_answered_30_with_the_stan(host):
    with host.terminal() as pos:
        pos.send_raw(_corrupt_field(pos, purchase(host.dialect, "000321"), 4))
        answer = pos.receive()
        assert (answer.mti, answer[39], answer[11], answer[41]) == ("0210", "30", "000321", "10000001")
        # The framing held, so this connection goes on working.
        assert pos.exchange(purchase(host.dialect, "000322", amount=100))[39] == "00"
    _still_approves(host, "000323")
    assert host.balance("A-1001") == OPENING["A-1001"] - 200
    notes = [m.note for m in host.journal().messages() if m.stan == "000321" and m.direction == "in"]
    assert notes and "field 4" in notes[0]


def test_unreadable_message_without_a_stan_closes_the_connection(host):
    with host.terminal() as bad:
        bad.send_raw(frame(host.dialect.framing, b"\xee" * 30))
        assert bad.closed_by_host()
    _still_approves(host, "000010")


def test_late_answer_is_reversed_by_the_terminal(tmp_path):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "host_rules.yaml").write_text("rules:\n  - name: slow\n    when: {amount: 6801}\n    delay: 1.0\n")
    for dialect in ("iso87ascii", "cup"):
        with running_host(tmp_path, dialect, fixtures_dir=fixtures, db_name=f"{dialect}.sqlite") as host:
            with host.terminal() as pos:
                pos.exchange(sign_on(host.dialect, "000001"))
                original = purchase(host.dialect, "000002", amount=6801)
                pos.send(original)
                with pytest.raises(socket.timeout):
                    pos.receive(timeout=0.2)  # the terminal gives up waiting
                pos.send(reversal(host.dialect, original, "000003"))
                first = pos.receive(timeout=5)
                late = pos.receive(timeout=5)
            assert (first.mti, first[39]) == ("0410", "00")
            assert (late.mti, late[39], late[11]) == ("0210", "00", "000002")  # the real answer, delayed
            assert host.balance("A-1001") == OPENING["A-1001"]
            [row] = host.journal().transactions()
            assert row.status == REVERSED


def test_stopping_the_host_cancels_answers_still_waiting_out_a_delay(tmp_path):
    with running_host(tmp_path, "cup") as host:  # built-in rules: amount 6801 is answered after 15 s
        pos = host.terminal()
        pos.exchange(sign_on(host.dialect, "000001"))
        pos.send(purchase(host.dialect, "000002", amount=6801))
        with pytest.raises(socket.timeout):
            pos.receive(timeout=0.2)
        host.thread.stop()
        with pytest.raises(ConnectionError):
            pos.receive(timeout=5)  # closed, and the delayed 0210 never sent
        pos.close()
        [row] = host.journal().transactions()
    assert row.status == "approved"  # decided and journaled before the delay began


def _exploding_on_777(ctx: Context) -> Decline | None:
    if ctx.amount == 777:
        raise RuntimeError("a step with a bug")
    return None


def test_a_failing_step_answers_96_and_the_host_keeps_serving(tmp_path):
    base = build_host("cup", tmp_path / "journal.sqlite", clock=host_clock())
    core = HostCore(base.dialect, base.journal, base.registry, base.issuer, base.rules,
                    clock=base.clock, steps=(*STEPS[:2], _exploding_on_777, *STEPS[2:]))
    with running_host(tmp_path, "cup", core=core) as host:
        with host.terminal() as pos:
            pos.exchange(sign_on(host.dialect, "000001"))
            assert pos.exchange(purchase(host.dialect, "000002", amount=777))[39] == "96"
            assert pos.exchange(purchase(host.dialect, "000003", amount=778))[39] == "00"
        rows = host.journal().transactions()
    assert [(r.response_code, r.decline_step) for r in rows] == [("96", "_exploding_on_777"), ("00", None)]


def test_rules_file_errors_name_the_rule(tmp_path):
    (tmp_path / "host_rules.yaml").write_text("rules:\n  - name: odd\n    when: {colour: red}\n    respond: '05'\n")
    with pytest.raises(FixtureError, match="rule 'odd'.*colour"):
        Rules.from_fixtures(tmp_path)


def test_no_full_pan_or_track_in_journal_trace_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="possim.host")
    trace = tmp_path / "host.trace"
    with running_host(tmp_path, "iso87ascii", trace=trace) as host:
        with host.terminal() as pos:
            pos.exchange(sign_on(host.dialect, "000001"))
            stan = 2
            for name in CARDS:
                for keyed in (False, True):
                    request = purchase(host.dialect, f"{stan:06d}", card=name, keyed=keyed, amount=100)
                    pos.exchange(request)
                    stan += 1
            original = purchase(host.dialect, f"{stan:06d}", amount=100)
            pos.exchange(original)
            pos.exchange(reversal(host.dialect, original, f"{stan + 1:06d}"))
            pos.send_raw(_corrupt_field(pos, purchase(host.dialect, f"{stan + 2:06d}", keyed=True), 2))
            assert pos.receive()[39] == "30"
            pos.send_raw(_corrupt_field(pos, purchase(host.dialect, f"{stan + 3:06d}"), 35))
            assert pos.receive()[39] == "30"
    written = [p for p in tmp_path.iterdir() if p.name.startswith("journal.sqlite")] + [trace]
    assert trace.stat().st_size > 0
    blobs = {p.name: p.read_bytes() for p in written}
    blobs["log"] = caplog.text.encode()
    assert b"622848*********0017" in blobs["journal.sqlite"]  # masked PANs are there
    for card in CARDS.values():
        digits = card["pan"][:-1].encode()  # the corrupted requests changed the last digit only
        for name, blob in blobs.items():
            assert digits not in blob, f"PAN of card {card['name']} in {name}"
