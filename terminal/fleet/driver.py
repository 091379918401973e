"""A fleet of load terminals on one event loop: sign on, then send the mix closed- or open-loop until time is up.

Each terminal has a TCP connection of its own (a `TcpLink`, which hangs up on
a timeout so a late answer is never taken for the next one) and, like a real
terminal, one request outstanding at a time. Closed loop: a terminal sends
its next request as soon as the answer to the last one came. Open loop: the
run's rate is shared out evenly, every terminal has a timetable, and a
request's latency counts from its slot in the timetable.

An unanswered request is reversed at once (0400, reason 98), as a terminal
must before it sends anything else; an answer that cannot be read counts as
an error and is reversed too.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..link import LinkError, LinkTimeout, TcpLink
from .protocol import AnswerError, FleetTerminal, Request
from .stats import Recorder, Snapshot

SIGN_ON_AT_ONCE = 50
"""Sign-ons in flight together: a fleet of 500 does not open 500 connections in the same millisecond."""
PAUSE_AFTER_LINK_ERROR_S = 0.2
"""A terminal whose host refused the connection waits this long before it tries again (no busy loop)."""


@dataclass(frozen=True)
class Mix:
    weights: tuple[tuple[str, int], ...]
    """(kind, weight) pairs, weights in any unit (percent, usually)."""

    def pick(self, rng: random.Random) -> str:
        kinds, weights = zip(*self.weights)
        return rng.choices(kinds, weights)[0]


@dataclass(frozen=True)
class LoadPlan:
    duration: float
    """Seconds of load after every terminal signed on."""
    mix: Mix
    amounts: tuple[int, int]
    """Least and most amount in minor units, drawn evenly (both the same: a fixed amount)."""
    rate: float | None = None
    """Transactions per second over the whole fleet; None runs closed loop."""
    timeout: float = 10.0
    seed: int = 1


class SignOnFailed(Exception):
    """No terminal of the fleet could sign on: nothing to measure."""


async def run_fleet(plan: LoadPlan, fleet: Sequence[FleetTerminal], address: tuple[str, int], *,
                    progress: Callable[[Snapshot], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[Recorder, float, list[str]]:
    """Run `plan` with `fleet` against the host at `address`: the recorder, the seconds of load, and the
    sign-on problems (one line per terminal that could not sign on; those sit the run out)."""
    links = [TcpLink(*address, terminal.dialect.framing) for terminal in fleet]
    try:
        problems = await _sign_on_all(fleet, links, plan.timeout)
        ready = [(t, link) for t, link in zip(fleet, links) if t.signed_on]
        if not ready:
            raise SignOnFailed(f"no terminal signed on; the first: {problems[0]}" if problems
                               else "the fleet is empty")
        with _few_collections():
            recorder, seconds = await _load(plan, ready, clock, progress)
        return recorder, seconds, problems
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


async def _load(plan: LoadPlan, ready: Sequence[tuple[FleetTerminal, TcpLink]], clock: Callable[[], float],
                progress: Callable[[Snapshot], None] | None) -> tuple[Recorder, float]:
    """The timed part: every signed-on terminal sending until the plan's duration is up."""
    recorder = Recorder()
    began = clock()
    end = began + plan.duration
    interval = len(ready) / plan.rate if plan.rate else None
    tasks = [
        asyncio.create_task(_drive(terminal, link, plan, recorder, began, end, clock,
                                   random.Random(plan.seed * 100_003 + index),
                                   None if interval is None else (interval, interval * index / len(ready))))
        for index, (terminal, link) in enumerate(ready)
    ]
    ticker = asyncio.create_task(_tick(recorder, began, end, clock, progress))
    try:
        await asyncio.gather(*tasks)
    finally:
        ticker.cancel()
        for task in tasks:
            task.cancel()
    return recorder, clock() - began


@contextmanager
def _few_collections() -> Iterator[None]:
    """The generator's own garbage collections kept out of the figures.

    A full collection walks every object the process holds — the fleet, the
    latencies — and stalls every terminal for tens of milliseconds: measured,
    it was the whole p99.9 of a run at 1,000/s (22 ms with collections as
    usual, 4.3 ms with them held back like this). So what exists when the load starts is frozen
    out of the collector's reach, and the youngest generation collects ten
    times less often; both are put back when the load ends.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(thresholds[0] * 10, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _sign_on_all(fleet: Sequence[FleetTerminal], links: Sequence[TcpLink], timeout: float) -> list[str]:
    gate = asyncio.Semaphore(SIGN_ON_AT_ONCE)
    problems: list[str] = []

    async def sign_on(terminal: FleetTerminal, link: TcpLink) -> None:
        async with gate:
            request = terminal.sign_on()
            try:
                outcome = terminal.answer(request, await link.exchange(request.data, timeout))
            except (LinkError, AnswerError) as exc:
                problems.append(f"terminal {terminal.tid}: sign-on: {exc}")
                return
            if not outcome.approved:
                problems.append(f"terminal {terminal.tid}: sign-on answered {outcome.code}")

    await asyncio.gather(*(sign_on(t, link) for t, link in zip(fleet, links)))
    return problems


async def _drive(terminal: FleetTerminal, link: TcpLink, plan: LoadPlan, recorder: Recorder, began: float,
                 end: float, clock: Callable[[], float], rng: random.Random,
                 timetable: tuple[float, float] | None) -> None:
    """One terminal's part: its requests until `end`. `timetable` is (interval, offset) in an open-loop run."""
    sent = 0
    while True:
        due = clock() if timetable is None else began + timetable[1] + sent * timetable[0]
        if due >= end:
            return
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        sent += 1
        kind = plan.mix.pick(rng)
        request = terminal.request(kind, rng.randint(*plan.amounts))
        try:
            payload = await link.exchange(request.data, plan.timeout)
            outcome = terminal.answer(request, payload)
        except LinkTimeout as exc:
            recorder.failed(request.kind, clock() - began, timeout=True)
            if exc.sent:
                await _reverse(terminal, link, request, plan.timeout, recorder)
            continue
        except LinkError as exc:
            recorder.failed(request.kind, clock() - began)
            if exc.sent:
                await _reverse(terminal, link, request, plan.timeout, recorder)
            await asyncio.sleep(PAUSE_AFTER_LINK_ERROR_S)
            continue
        except AnswerError:
            recorder.failed(request.kind, clock() - began, unreadable=True)
            await _reverse(terminal, link, request, plan.timeout, recorder)
            continue
        now = clock()
        recorder.answered(request.kind, outcome.code, now - due, now - began)


async def _reverse(terminal: FleetTerminal, link: TcpLink, unanswered: Request, timeout: float,
                   recorder: Recorder) -> None:
    """Send the reversal once; a reversal that fails too is counted, not retried (the run's clock is running)."""
    if unanswered.kind == "signon":
        return
    reversal = terminal.reversal(unanswered)
    try:
        outcome = terminal.answer(reversal, await link.exchange(reversal.data, timeout))
    except (LinkError, AnswerError):
        recorder.reversed(approved=False)
        return
    recorder.reversed(approved=outcome.approved)


async def _tick(recorder: Recorder, began: float, end: float, clock: Callable[[], float],
                progress: Callable[[Snapshot], None] | None) -> None:
    """Once a second: the live figures to `progress`, and the live window trimmed."""
    while clock() < end:
        await asyncio.sleep(1.0)
        snapshot = recorder.snapshot(clock() - began)
        if progress is not None:
            progress(snapshot)
