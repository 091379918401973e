"""Batch close at the terminal: backlog first, totals (0500), upload (0320), end of upload, next batch.

docs/transactions.md "Batch close". A `BatchCloser` works for one call of
`Terminal.batch_close` (which holds the terminal's lock) and uses its
terminal's state, link and message helpers. Every step is committed to the
state before the message that depends on it leaves, so a close interrupted
at any point — no answer, a killed process — resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from possim.wire.batch_totals import BatchTotals, TotalsError, decode_cup48, end_of_upload_48, pack_cup_upload
from possim.wire.message import Message

from .batch import batch_totals, settled_entries, upload_record
from .link import LinkError, LinkTimeout
from .messages import build_cup_upload, build_iso_upload, build_settlement, response_text, settles_in_field_48
from .results import AdviceOutcome, BatchCloseResult, ReversalOutcome, Unreadable
from .state import BatchEntry, CloseProgress, TerminalState

if TYPE_CHECKING:
    from .terminal import Terminal

APPROVED = "00"
UPLOAD_PER_MESSAGE = 8


class _Interrupted(Exception):
    """A batch-close message got no usable answer: the close stops here and resumes on the next call."""

    def __init__(self, message: str, timed_out: bool, code: str | None = None):
        super().__init__(message)
        self.timed_out = timed_out
        self.code = code


class BatchCloser:
    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.state, self.dialect, self.profile, self.clock = terminal.state, terminal.dialect, terminal.profile, terminal.clock

    async def close(self) -> BatchCloseResult:
        """Close the open batch as docs/transactions.md "Batch close" says; call again to resume an interrupted one.

        Owed reversal and queued advices first (the close waits while any is
        left), then the totals 0500, the upload (cup always; iso87 after
        out of balance), the end-of-upload 0320 (cup) or trailer 0500
        (iso87), and the next batch opens. Each step is committed before its
        message leaves: a record flagged uploaded is never sent again, even
        when the 0320 carrying it got no answer.
        """
        prior, advices = await self.terminal._backlog()  # an approved refund advice joins the batch: totals after
        totals = batch_totals(self.dialect, self.state.open_batch())
        result = _CloseResult(self.profile.tid, self.state.batch_number, totals, prior, tuple(advices))
        if prior is not None and not prior.acknowledged:
            return result.done(self.state, f"batch not closed: {prior.message}")
        queued = self.state.queued_advices()
        if queued:
            return result.done(self.state, f"batch not closed: {len(queued)} advice(s) still unanswered")
        try:
            return await self._steps(result)
        except _Interrupted as exc:
            return result.done(
                self.state, f"batch close interrupted: {exc}; batch_close() again resumes",
                timed_out=exc.timed_out, code=exc.code,
            )

    async def _steps(self, result: _CloseResult) -> BatchCloseResult:
        progress = self.state.close_progress()
        cup_style = settles_in_field_48(self.dialect)
        if progress.phase in (None, "totals"):
            if progress.phase is None:  # committed before the 0500 leaves: a resumed close resends this very 0500
                progress = CloseProgress("totals", None, None, self.state.next_stan())
                self.state.save_close_progress(progress)
            answer = await self._exchange(self._settlement_request(result.totals, trailer=False, stan=progress.stan))
            code = answer[39]
            result.code = code
            if code == self.dialect.response_code("batch_closed"):
                return result.closed_already(self.state)
            if cup_style and code == APPROVED:
                try:
                    _, verdict = decode_cup48(answer.get(48) or "")
                except TotalsError as exc:
                    raise _Interrupted(f"totals answer unreadable: {exc}", False, code) from None
                if verdict not in ("1", "2"):
                    raise _Interrupted(f"host could not compare the totals (result {verdict})", False, code)
                progress = CloseProgress("upload", verdict == "1", code)
            elif not cup_style and code == APPROVED:
                return result.finish(self.state, balanced=True)
            elif not cup_style and code == self.dialect.response_code("out_of_balance"):
                progress = CloseProgress("upload", False, code)
            else:  # the host refused the totals: the batch stays open, trading goes on
                self.state.save_close_progress(CloseProgress(None, None, None))
                raise _Interrupted(f"host answered the totals with {code} ({response_text(code)})", False, code)
            self.state.save_close_progress(progress)
        result.balanced, result.code = progress.balanced, progress.response_code
        if progress.phase == "upload":
            await (self._upload_cup(result) if cup_style else self._upload_iso(result))
            progress = replace(progress, phase="end")
            self.state.save_close_progress(progress)
        if cup_style:
            uploaded = sum(1 for e in settled_entries(self.dialect, self.state.open_batch()) if e.uploaded)
            request = build_cup_upload(
                self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(), now=self.clock(),
                batch_number=self.state.batch_number, field48=end_of_upload_48(uploaded), end=True,
            )
        else:
            request = self._settlement_request(result.totals, trailer=True)
        answer = await self._exchange(request)
        if answer[39] == self.dialect.response_code("batch_closed"):
            return result.closed_already(self.state)
        if answer[39] != APPROVED:
            raise _Interrupted(f"host answered the end of upload with {answer[39]} ({response_text(answer[39])})", False)
        return result.finish(self.state, balanced=progress.balanced)

    async def _upload_cup(self, result: _CloseResult) -> None:
        pending = [e for e in settled_entries(self.dialect, self.state.open_batch()) if not e.uploaded]
        for start in range(0, len(pending), UPLOAD_PER_MESSAGE):
            chunk = pending[start:start + UPLOAD_PER_MESSAGE]
            (field48,) = pack_cup_upload([upload_record(self.dialect, e) for e in chunk])
            request = build_cup_upload(
                self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(), now=self.clock(),
                batch_number=self.state.batch_number, field48=field48,
            )
            await self._upload(request, chunk, result)

    async def _upload_iso(self, result: _CloseResult) -> None:
        for entry in [e for e in settled_entries(self.dialect, self.state.open_batch()) if not e.uploaded]:
            await self._upload(build_iso_upload(self.dialect, entry.original, entry.rrn, now=self.clock()), [entry], result)

    async def _upload(self, request: Message, entries: list[BatchEntry], result: _CloseResult) -> None:
        """Flag the records uploaded, then send them: a record is never uploaded twice, even across a crash."""
        stans = [e.stan for e in entries]
        data = self.terminal._frame(request)
        self.state.mark_uploaded(stans)
        try:
            answer = await self._exchange(request, data)
        except LinkError:  # it never left (_exchange turns one that did into _Interrupted): not uploaded after all
            self.state.mark_uploaded(stans, uploaded=False)
            raise
        except _Interrupted:  # it left; its answer did not come back readable
            self._count(result, entries)
            raise
        self._count(result, entries)
        if answer[39] != APPROVED:
            raise _Interrupted(f"host answered an upload 0320 with {answer[39]} ({response_text(answer[39])})", False)

    @staticmethod
    def _count(result: _CloseResult, entries: list[BatchEntry]) -> None:
        result.uploaded += len(entries)
        result.upload_messages += 1

    async def _exchange(self, request: Message, data: bytes | None = None) -> Message:
        """One batch-close exchange; anything but a readable answer interrupts the close (a host never reached raises)."""
        try:
            return await self.terminal._ask(request, data if data is not None else self.terminal._frame(request))
        except LinkError as exc:
            if not exc.sent:
                raise
            raise _Interrupted(str(exc), isinstance(exc, LinkTimeout)) from None
        except Unreadable as exc:
            raise _Interrupted(f"answer unreadable: {exc}", False) from None

    def _settlement_request(self, totals: BatchTotals, trailer: bool, stan: str | None = None) -> Message:
        return build_settlement(
            self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=stan or self.state.next_stan(), now=self.clock(),
            batch_number=self.state.batch_number, currency=self.profile.currency, totals=totals, trailer=trailer,
        )


@dataclass
class _CloseResult:
    """What a batch close has done so far, turned into a BatchCloseResult when it stops."""

    tid: str
    batch_number: int
    totals: BatchTotals
    prior: ReversalOutcome | None
    advices: tuple[AdviceOutcome, ...]
    code: str | None = None
    balanced: bool | None = None
    uploaded: int = 0
    upload_messages: int = 0

    def _result(self, state: TerminalState, closed: bool, message: str, **extra: Any) -> BatchCloseResult:
        flagged = sum(1 for e in state.open_batch() if e.uploaded)
        next_batch = state.finish_close() if closed else None
        return BatchCloseResult(
            tid=self.tid, batch_number=self.batch_number, closed=closed, balanced=self.balanced,
            response_code=extra.pop("code", None) or self.code, already_closed=extra.pop("already_closed", False),
            totals=self.totals, uploaded=self.uploaded, upload_messages=self.upload_messages, upload_total=flagged,
            next_batch_number=next_batch, message=message, prior_reversal=self.prior, prior_advices=self.advices,
            **extra,
        )

    def done(self, state: TerminalState, message: str, timed_out: bool = False, code: str | None = None) -> BatchCloseResult:
        return self._result(state, False, message, timed_out=timed_out, code=code)

    def finish(self, state: TerminalState, balanced: bool | None) -> BatchCloseResult:
        self.balanced = balanced
        verdict = "balanced" if balanced else "out of balance"
        return self._result(state, True, f"batch {self.batch_number:06d} closed ({verdict}, {self.uploaded} record(s) uploaded)")

    def closed_already(self, state: TerminalState) -> BatchCloseResult:
        return self._result(
            state, True, f"host says batch {self.batch_number:06d} is closed already (80); the terminal moves on",
            already_closed=True,
        )
