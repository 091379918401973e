"""Recording a session: a real terminal talks to a real host through the FrameProxy, and what it did comes back
as a scenario that loads, names the right actions, cards, amounts and captures, holds no card data in clear,
and replays green against a fresh host. Also `possim record` as a user runs it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from host_support import TID, TestTerminal, purchase, running_host
from possim.fixtures import load_fixture
from possim.terminal.cards import fixture_cards, resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.replay.model import ACTIONS
from possim.terminal.replay.record import UNKNOWN, exchange_line, session_scenario
from possim.terminal.replay.scenario import load_scenario
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.framing import split_envelope
from possim.wire.proxy import Exchange, FrameProxy
from possim.wire.server_thread import ServerThread

POSSIM = [sys.executable, "-m", "possim.cli"]
LATE = 6801
LATE_RULE = f"rules:\n  - {{name: late purchase, when: {{amount: {LATE}}}, delay: 1.5}}\n"
CARDS = fixture_cards()
SECRET_FIELDS = (2, 14, 35, 36, 45, 52, 55, 62, 96)

Session = Callable[[Terminal], Awaitable[None]]


def late_rules(tmp_path: Path) -> Path:
    folder = tmp_path / "fixtures"
    folder.mkdir(exist_ok=True)
    (folder / "host_rules.yaml").write_text(LATE_RULE)
    return folder


def terminal_for(address: tuple[str, int], dialect: str, state: Path, timeout: float = 5.0) -> Terminal:
    profile = load_profile(TID, dialect=dialect, host=f"{address[0]}:{address[1]}", timeout=timeout,
                           reversal_retries=1)
    return Terminal(profile, TcpLink(*address, profile.framing), TerminalState(profile.tid, state))


async def recorded(port: int, dialect: str, state: Path, session: Session, timeout: float = 5.0) -> list[Exchange]:
    """The exchanges a FrameProxy in front of the host on `port` saw while a terminal ran `session` through it."""
    exchanges: list[Exchange] = []
    proxy = FrameProxy(("127.0.0.1", port), load_dialect(dialect).framing, on_exchange=exchanges.append)
    address = await proxy.start()
    terminal = terminal_for(address, dialect, state, timeout)
    try:
        await session(terminal)
    finally:
        await terminal.link.close()
        terminal.state.close()
        await proxy.stop()
    return exchanges


async def day(terminal: Terminal) -> None:
    """Sign-on, a PIN purchase voided, a chip purchase refunded in part, a purchase whose answer never comes
    (reversed by the terminal), then the batch close."""
    assert (await terminal.sign_on()).approved
    first = await terminal.purchase(1250, resolve_card("approve"), pin="1234")
    assert first.approved
    assert (await terminal.void(stan=first.stan)).approved
    second = await terminal.purchase(2000, resolve_card("approve2"), entry="chip")
    assert second.approved and second.rrn
    assert (await terminal.refund(500, resolve_card("approve2"), second.rrn)).approved
    late = await terminal.purchase(LATE, resolve_card("approve"))
    assert late.timed_out and late.reversal is not None and late.reversal.acknowledged
    assert (await terminal.batch_close()).closed


def record_day(tmp_path: Path, dialect: str) -> tuple[str, list[str], list[Exchange]]:
    with running_host(tmp_path, dialect, late_rules(tmp_path)) as host:
        exchanges = asyncio.run(recorded(host.port, dialect, tmp_path / "t.sqlite", day, timeout=0.6))
    text, warnings = session_scenario(exchanges, load_dialect(dialect), name="a recorded day")
    return text, warnings, exchanges


def secrets_of(exchanges: list[Exchange], dialect: str) -> set[str]:
    """Every card data and key value that crossed the wire, and the PANs of cards.yaml."""
    codec = Codec(load_dialect(dialect))
    found = {card.pan for card in CARDS.values()} | {card.track2 for card in CARDS.values()}
    for exchange in exchanges:
        for frame in filter(None, (exchange.request, exchange.response)):
            _, body = split_envelope(codec.dialect.framing, frame[codec.dialect.framing.length_size:])
            message = codec.decode(body)
            found |= {message[n] for n in SECRET_FIELDS if n in message and len(message[n]) >= 8}
    return found


def assert_no_card_data(text: str, secrets: set[str]) -> None:
    flat = text.upper()
    leaked = sorted(s for s in secrets if s.upper() in flat)
    assert leaked == [], f"clear card data in the scenario: {[s[:4] + '…' for s in leaked]}"
    assert not re.search(r"[0-9]{13,19}", re.sub(r'raw: "[0-9A-F]+"', "", text)), "a PAN-like number in the scenario"


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_a_recorded_day_becomes_the_steps_the_terminal_took(tmp_path, dialect):
    text, warnings, exchanges = record_day(tmp_path, dialect)
    assert warnings == []
    document = yaml.safe_load(text)
    assert document["name"] == "a recorded day" and document["dialect"] == dialect
    assert text.startswith("# Recorded by `possim record`")
    steps = document["steps"]
    assert [next(k for k in s if k in ACTIONS) for s in steps] == [
        "signon", "purchase", "void", "purchase", "refund", "purchase", "batch_close"]
    assert [s["name"] for s in steps] == [
        "sign on", "purchase 12.50 approve", "void 12.50", "purchase 20.00 approve2", "refund 5.00 approve2",
        "purchase 68.01 approve (no answer)", "batch close"]
    signon, sale, void, chip, refund, late, close = steps

    assert sale["purchase"] == {"card": "approve", "amount": 1250, "pin": "card"}
    assert sale["capture"] == {"stan1": "request.11"}
    assert void["void"] == {"stan": "${stan1}"}
    assert chip["purchase"] == {"card": "approve2", "amount": 2000, "entry": "chip"}
    assert chip["capture"] == {"rrn1": "37"}
    assert refund["refund"] == {"card": "approve2", "amount": 500, "rrn": "${rrn1}"}

    expected = {"mti": "0210", "39": "00", "4": "echo", "11": "echo", "41": "echo", "42": "echo", "12": "present",
                "13": "present", "37": "present", "38": "present", "64": "present"}
    if dialect != "cup":
        expected["7"] = "present"  # field 7 travels in iso87 only
    assert sale["expect"] == expected
    assert refund["expect"]["mti"] == "0230" and refund["expect"]["39"] == "00"
    assert signon["expect"]["mti"] == "0810" and signon["expect"]["62"] == "present"

    assert late["purchase"] == {"card": "approve", "amount": LATE}
    assert late["fault"] == {"drop": True} and late["outcome"] == "no_answer"
    assert late["reversal"] == {"mti": "0410", "39": "00"}
    assert "expect" not in late
    # the terminal's own reversal and the close's uploads are no steps of their own
    assert len(exchanges) > len(steps)
    assert close == {"name": "batch close", "batch_close": {}, "result": {"response_code": "00"}}
    assert 0.6 <= document["terminals"]["pos"]["timeout"] <= 1.5 and document["terminals"]["pos"]["tid"] == TID

    assert_no_card_data(text, secrets_of(exchanges, dialect))
    path = tmp_path / "day.yaml"
    path.write_text(text)
    scenario = load_scenario(path)
    assert [s.action for s in scenario.steps][1:3] == ["purchase", "void"]
    assert scenario.steps[5].fault is not None and scenario.steps[5].fault.kind == "drop"


def test_a_recorded_day_replays_green_against_a_fresh_host(tmp_path):
    runner = pytest.importorskip("possim.terminal.replay.runner")
    from possim.lab import embedded_target

    text, _, _ = record_day(tmp_path, "cup")
    path = tmp_path / "day.yaml"
    path.write_text(text)
    scenario = load_scenario(path)

    async def main():
        async with embedded_target("cup", workdir=tmp_path / "replay-host") as target:
            return await runner.run_scenario(scenario, target, state_dir=tmp_path / "replay-state")

    result = asyncio.run(main())
    assert result.error is None, result.error
    assert [f.message for f in result.failures] == []
    assert result.steps_run == len(scenario.steps)


def test_qr_order_numbers_are_captured_and_referenced(tmp_path):
    async def session(terminal: Terminal) -> None:
        await terminal.sign_on()
        order = await terminal.qr_order(3000)
        assert order.approved and order.order_no
        await terminal.qr_query(order.order_no)
        assert (await terminal.qr_cancel(order.order_no)).approved

    with running_host(tmp_path, "cup") as host:
        exchanges = asyncio.run(recorded(host.port, "cup", tmp_path / "t.sqlite", session))
    text, warnings = session_scenario(exchanges, load_dialect("cup"), name="qr")
    assert warnings == []
    steps = yaml.safe_load(text)["steps"]
    assert [s["name"] for s in steps] == ["sign on", "QR order 30.00", "QR query", "QR cancel"]
    assert steps[1]["qr_order"] == {"amount": 3000} and steps[1]["capture"] == {"order1": "result.order_no"}
    assert steps[2]["qr_query"] == {"order_no": "${order1}"}
    assert steps[3]["qr_cancel"] == {"order_no": "${order1}"} and steps[3]["expect"]["mti"] == "0410"
    path = tmp_path / "qr.yaml"
    path.write_text(text)
    assert [s.action for s in load_scenario(path).steps] == ["signon", "qr_order", "qr_query", "qr_cancel"]


def test_a_completion_quotes_its_preauth_by_captured_rrn_and_authorization_code(tmp_path):
    async def session(terminal: Terminal) -> None:
        await terminal.sign_on()
        hold = await terminal.preauth(10000, resolve_card("approve"), pin="1234")
        assert hold.approved and hold.rrn and hold.auth_code
        assert (await terminal.completion(8000, resolve_card("approve"), hold.rrn, hold.auth_code)).approved
        assert (await terminal.balance(resolve_card("approve2"), entry="contactless")).approved

    with running_host(tmp_path, "cup") as host:
        exchanges = asyncio.run(recorded(host.port, "cup", tmp_path / "t.sqlite", session))
    text, warnings = session_scenario(exchanges, load_dialect("cup"), name="hold")
    assert warnings == []
    _, hold, completion, balance = yaml.safe_load(text)["steps"]
    assert hold["preauth"] == {"card": "approve", "amount": 10000, "pin": "card"}
    assert hold["capture"] == {"rrn1": "37", "auth1": "38"}
    assert completion["completion"] == {"card": "approve", "amount": 8000, "rrn": "${rrn1}", "auth_code": "${auth1}"}
    assert balance == {"name": "balance approve2", "balance": {"card": "approve2", "entry": "contactless"},
                       "expect": balance["expect"]} and balance["expect"]["39"] == "00"
    assert_no_card_data(text, secrets_of(exchanges, "cup"))


def test_each_terminal_gets_an_alias_and_its_steps_name_it(tmp_path):
    async def main(port: int) -> list[Exchange]:
        exchanges: list[Exchange] = []
        proxy = FrameProxy(("127.0.0.1", port), load_dialect("cup").framing, on_exchange=exchanges.append)
        address = await proxy.start()
        first = terminal_for(address, "cup", tmp_path / "1.sqlite")
        profile = load_profile("10000002", dialect="cup", host=f"{address[0]}:{address[1]}")
        second = Terminal(profile, TcpLink(*address, profile.framing), TerminalState("10000002", tmp_path / "2.sqlite"))
        for terminal in (first, second):
            assert (await terminal.sign_on()).approved
        assert (await second.purchase(700, resolve_card("approve2"))).approved
        assert (await first.purchase(300, resolve_card("approve"))).approved
        for terminal in (first, second):
            await terminal.link.close()
            terminal.state.close()
        await proxy.stop()
        return exchanges

    with running_host(tmp_path, "cup") as host:
        exchanges = asyncio.run(main(host.port))
    document = yaml.safe_load(session_scenario(exchanges, load_dialect("cup"), name="two")[0])
    assert document["terminals"] == {"pos": TID, "pos2": "10000002"}
    assert [(s.get("terminal"), s["name"]) for s in document["steps"]] == [
        ("pos", "sign on"), ("pos2", "sign on"), ("pos2", "purchase 7.00 approve2"), ("pos", "purchase 3.00 approve")]


def test_a_card_not_in_cards_yaml_is_written_unknown_and_masked(tmp_path):
    stranger = "4111111111111111"

    async def session(terminal: Terminal) -> None:
        await terminal.sign_on()
        await terminal.purchase(990, resolve_card(stranger), entry="manual")

    with running_host(tmp_path, "cup") as host:
        exchanges = asyncio.run(recorded(host.port, "cup", tmp_path / "t.sqlite", session))
    text, warnings = session_scenario(exchanges, load_dialect("cup"), name="stranger")
    assert stranger not in text
    line = next(line for line in text.splitlines() if "purchase:" in line)
    assert line == f"    purchase: {{card: {UNKNOWN}, amount: 990, entry: manual}}  # card 411111******1111 is not in cards.yaml"
    assert len(warnings) == 1 and "411111******1111" in warnings[0] and stranger not in warnings[0]
    assert f"# warning: {warnings[0]}" in text
    assert yaml.safe_load(text)["steps"][1]["purchase"]["card"] == UNKNOWN
    assert_no_card_data(text, secrets_of(exchanges, "cup") | {stranger})


def test_a_request_of_no_action_is_kept_raw_without_its_card_data(tmp_path):
    """iso87's authorization (0100 000000) has no scenario action: it stays a raw body, track 2 left out."""
    dialect = load_dialect("iso87ascii")
    exchanges: list[Exchange] = []
    with running_host(tmp_path, "iso87ascii") as host:
        proxy = ServerThread(lambda: FrameProxy(("127.0.0.1", host.port), dialect.framing,
                                                on_exchange=exchanges.append), "proxy")
        _, port = proxy.start()
        try:
            with TestTerminal(port, dialect) as terminal:
                answer = terminal.exchange(purchase(dialect, "000001", mti="0100"))
        finally:
            proxy.stop()
    text, warnings = session_scenario(exchanges, dialect, name="raw")
    (step,) = yaml.safe_load(text)["steps"]
    message = Codec(dialect).decode(bytes.fromhex(step["raw"]))
    assert message.mti == "0100" and 35 not in message and message[4] == f"{1250:012d}"
    assert step["expect"]["39"] == answer[39]
    assert len(warnings) == 1 and "authorization has no scenario action" in warnings[0] and "field 35" in warnings[0]
    assert_no_card_data(text, secrets_of(exchanges, "iso87ascii"))


def test_an_undecodable_request_is_left_out_with_a_warning(tmp_path):
    dialect = load_dialect("cup")
    exchanges: list[Exchange] = []
    with running_host(tmp_path, "cup") as host:
        proxy = ServerThread(lambda: FrameProxy(("127.0.0.1", host.port), dialect.framing,
                                                on_exchange=exchanges.append), "proxy")
        _, port = proxy.start()
        try:
            with TestTerminal(port, dialect) as terminal:
                terminal.send_raw(b"\x00\x0d" + dialect.framing.tpdu + dialect.framing.header + b"\x02\x00")
                terminal.closed_by_host(timeout=5)
        finally:
            proxy.stop()
    assert len(exchanges) == 1
    text, warnings = session_scenario(exchanges, dialect, name="garbage")
    assert yaml.safe_load(text)["steps"] == []
    assert len(warnings) == 1 and "exchange 1" in warnings[0] and "request not decodable in cup" in warnings[0]


def test_an_exchange_line_shows_the_card_masked_only(tmp_path):
    async def session(terminal: Terminal) -> None:
        await terminal.sign_on()
        await terminal.purchase(1250, resolve_card("approve"))

    with running_host(tmp_path, "cup") as host:
        exchanges = asyncio.run(recorded(host.port, "cup", tmp_path / "t.sqlite", session))
    lines = [exchange_line(e, load_dialect("cup")) for e in exchanges]
    assert lines[0].endswith("0800 stan 000001 -> 0810 00")
    assert lines[1].endswith("0200 stan 000002 622848*********0017 -> 0210 00")
    assert CARDS["approve"].pan not in "\n".join(lines)


def test_possim_record_until_interrupted(tmp_path):
    output, raw = tmp_path / "session.yaml", tmp_path / "session.hex"
    with running_host(tmp_path, "cup") as host:
        process = subprocess.Popen(
            [*POSSIM, "record", "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{host.port}", "-o", str(output),
             "--raw", str(raw), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stderr is not None
            ready = process.stderr.readline()
            listening = re.search(r"listening on 127\.0\.0\.1:([0-9]+)", ready)
            assert listening, ready
            port = int(listening.group(1))

            async def session() -> None:
                terminal = terminal_for(("127.0.0.1", port), "cup", tmp_path / "t.sqlite")
                assert (await terminal.sign_on()).approved
                assert (await terminal.purchase(1250, resolve_card("approve"))).approved
                await terminal.link.close()
                terminal.state.close()

            asyncio.run(session())
            passed = [process.stderr.readline() for _ in range(2)]
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert "0200 stan 000002 622848*********0017 -> 0210 00" in passed[1]
    summary = json.loads(out)
    assert summary == {"exchanges": 2, "steps": 2, "warnings": [], "file": str(output.resolve()),
                       "raw": str(raw.resolve())}
    steps = yaml.safe_load(output.read_text())["steps"]
    assert [s["name"] for s in steps] == ["sign on", "purchase 12.50 approve"]
    assert load_scenario(output).name == "session"
    for text in (output.read_text(), raw.read_text(), "".join(passed) + err):
        assert CARDS["approve"].pan not in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_possim_record_refuses_a_bad_forward_address_in_one_line(tmp_path):
    done = subprocess.run([*POSSIM, "record", "--listen", "127.0.0.1:0", "--forward", "nowhere", "-o",
                           str(tmp_path / "s.yaml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "possim: error: --forward 'nowhere' must be HOST:PORT, e.g. 127.0.0.1:8583"
    assert not (tmp_path / "s.yaml").exists()


def test_possim_record_stops_after_count_exchanges(tmp_path):
    output = tmp_path / "one.yaml"
    with running_host(tmp_path, "cup") as host:
        process = subprocess.Popen(
            [*POSSIM, "record", "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{host.port}", "-o", str(output),
             "--count", "1", "--name", "just a sign-on"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stderr is not None
            port = int(re.search(r"127\.0\.0\.1:([0-9]+)", process.stderr.readline()).group(1))

            async def session() -> None:
                terminal = terminal_for(("127.0.0.1", port), "cup", tmp_path / "t.sqlite")
                assert (await terminal.sign_on()).approved
                await terminal.link.close()
                terminal.state.close()

            asyncio.run(session())
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert out.startswith("recorded 1 exchange(s) as 1 step(s): ")
    assert yaml.safe_load(output.read_text())["name"] == "just a sign-on"


def test_every_fixture_pan_is_checked_by_the_leak_test():
    """The scan above is only as good as its list: it holds every card of cards.yaml."""
    pans = {entry["pan"] for entry in load_fixture("cards.yaml")["cards"]}
    assert pans and pans <= {card.pan for card in CARDS.values()}
