"""The load fleet's terminal, plan and recorder: real messages to a real host over TCP, in every dialect."""

from __future__ import annotations

import asyncio
from array import array
from pathlib import Path

import pytest

from possim.lab import embedded_target
from possim.terminal import load_profile, resolve_card
from possim.terminal.fleet.plan import PlanError, parse_amounts, parse_duration, parse_mix, parse_rate
from possim.terminal.fleet.protocol import AnswerError, FleetTerminal
from possim.terminal.fleet.stats import Recorder, percentile
from possim.terminal.link import TcpLink
from possim.wire.codec import Codec
from possim.wire.money import currency

DIALECTS = ("cup", "iso87ascii", "iso87binary")


def fleet_terminal(dialect: str, tid: str = "10000001") -> FleetTerminal:
    profile = load_profile(tid, dialect=dialect)
    spoken = profile.load_dialect()
    return FleetTerminal(profile.tid, profile.mid, spoken, Codec(spoken), resolve_card("approve"),
                         profile.currency, profile.master_key)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_day_of_one_fleet_terminal_against_the_host(dialect: str, tmp_path: Path) -> None:
    async def day() -> None:
        async with embedded_target(dialect, workdir=tmp_path) as target:
            terminal = fleet_terminal(dialect)
            link = TcpLink(*target.iso, terminal.dialect.framing)

            async def ask(request):  # type: ignore[no-untyped-def]
                return terminal.answer(request, await link.exchange(request.data, 5))

            assert (await ask(terminal.sign_on())).approved
            sale = terminal.request("purchase", 1234)
            mac_field = 128 if any(n > 64 for n in sale.message.fields) else 64
            assert mac_field in sale.message, "a signed-on terminal MACs its sale"
            assert await ask(sale) == (await ask(terminal.request("qr", 500))).__class__("00", True)
            refund = terminal.request("refund", 5000)
            assert refund.kind == "refund" and int(refund.message[4]) == 1234, "a refund takes at most the sale's amount"
            assert (await ask(refund)).approved
            assert terminal.request("refund", 100).kind == "purchase", "with no sale left to refund, a purchase"
            unanswered = terminal.request("purchase", 777)
            await link.exchange(unanswered.data, 5)
            assert (await ask(terminal.reversal(unanswered))).approved
            await link.close()
            rows = target.journal_rows({"terminal_id": terminal.tid})
            by_stan = {row["stan"]: row for row in rows}
            assert by_stan[sale.stan]["status"] == "approved"
            assert by_stan[unanswered.stan]["status"] == "reversed"
            assert by_stan[refund.stan]["amount"] == 1234

    asyncio.run(day())


def test_an_answer_with_a_bad_mac_or_another_stan_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with embedded_target("iso87ascii", workdir=tmp_path) as target:
            terminal = fleet_terminal("iso87ascii")
            link = TcpLink(*target.iso, terminal.dialect.framing)
            sign_on = terminal.sign_on()
            terminal.answer(sign_on, await link.exchange(sign_on.data, 5))
            first = terminal.request("purchase", 1000)
            payload = await link.exchange(first.data, 5)
            tampered = bytearray(payload)
            tampered[-1] ^= 0x01  # the last byte is the MAC's
            with pytest.raises(AnswerError, match="MAC"):
                terminal.answer(first, bytes(tampered))
            second = terminal.request("purchase", 1001)
            with pytest.raises(AnswerError, match="STAN"):
                terminal.answer(second, payload)
            with pytest.raises(AnswerError, match="unreadable"):
                terminal.answer(second, b"\x00\x01garbage")
            await link.close()

    asyncio.run(run())


def test_plan_readers_name_the_option_and_the_part() -> None:
    mix = parse_mix("purchase:80, refund:5,qr:15")
    assert mix.weights == (("purchase", 80), ("refund", 5), ("qr", 15))
    assert parse_mix("purchase:100,qr:0").weights == (("purchase", 100),)
    for text, part in [("purchase:80,void:20", "item 2"), ("purchase", "KIND:WEIGHT"), ("qr:1,qr:2", "named twice"),
                       ("purchase:0", "no kind"), ("purchase:x", "whole weight")]:
        with pytest.raises(PlanError, match=part):
            parse_mix(text)
    assert parse_rate("2000/s") == 2000 and parse_rate("12.5") == 12.5 and parse_rate(None) is None
    assert parse_rate("closed") is None
    with pytest.raises(PlanError, match="--rate"):
        parse_rate("fast")
    assert (parse_duration("60s"), parse_duration("2m"), parse_duration("500ms"), parse_duration("3")) == (60, 120, 0.5, 3)
    with pytest.raises(PlanError, match="--duration '1 minute'"):
        parse_duration("1 minute")
    cny, jpy = currency("156"), currency("392")
    assert parse_amounts("12.50", cny) == (1250, 1250)
    assert parse_amounts("1.00-50.00", cny) == (100, 5000)
    assert parse_amounts("500", jpy) == (500, 500)
    for text in ("50.00-1.00", "0", "12.345"):
        with pytest.raises(PlanError, match="--amount"):
            parse_amounts(text, cny)


def test_percentiles_are_nearest_rank_and_the_summary_counts_every_outcome() -> None:
    ordered = array("d", [i / 1000 for i in range(1, 1001)])  # 1 ms … 1000 ms
    assert percentile(ordered, 50) == 0.5 and percentile(ordered, 99) == 0.99 and percentile(ordered, 99.9) == 0.999
    assert percentile(array("d"), 99) == 0.0
    recorder = Recorder()
    recorder.answered("purchase", "00", 0.010, 0.2)
    recorder.answered("purchase", "51", 0.030, 1.5)
    recorder.answered("qr", "00", 0.020, 1.7)
    recorder.failed("purchase", 2.1, timeout=True)
    recorder.reversed(approved=True)
    recorder.failed("refund", 2.2, unreadable=True)
    summary = recorder.summary(3.0)
    assert summary["transactions"] == 5 and summary["approved"] == 2
    assert summary["error_rate"] == pytest.approx(3 / 5)
    assert summary["response_codes"] == {"00": 2, "51": 1}
    assert summary["kinds"]["purchase"]["count"] == 3 and summary["kinds"]["purchase"]["approved"] == 1
    assert summary["latency_ms"]["max"] == pytest.approx(30.0) and summary["latency_ms"]["p50"] == pytest.approx(20.0)
    assert summary["tps_per_second"] == [1, 2, 2] and summary["errors_per_second"] == [0, 1, 2]
    assert summary["reversals"] == {"sent": 1, "approved": 1}
    assert (summary["timeouts"], summary["unreadable"]) == (1, 1)


def test_a_run_with_no_answer_has_no_latency_rather_than_zero() -> None:
    recorder = Recorder()
    recorder.failed("purchase", 0.5, timeout=True)
    summary = recorder.summary(1.0)
    assert summary["latency_ms"] is None and summary["kinds"]["purchase"]["latency_ms"] is None
    assert summary["tps_per_second"] == [1] and summary["error_rate"] == 1.0


def test_a_run_gives_the_collector_back_as_it_found_it(tmp_path: Path) -> None:
    """The driver holds garbage collections back while it measures; afterwards the process is as before."""
    import gc

    from possim.terminal.fleet.driver import LoadPlan, Mix, run_fleet

    before = gc.get_threshold()

    async def run() -> int:
        async with embedded_target("cup", workdir=tmp_path) as target:
            plan = LoadPlan(duration=0.3, mix=Mix((("purchase", 1),)), amounts=(100, 100))
            recorder, _, problems = await run_fleet(plan, [fleet_terminal("cup")], target.iso)
            assert problems == []
            return recorder.transactions

    assert asyncio.run(run()) > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
