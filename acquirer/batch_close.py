"""Batch close at the host: a terminal's totals (0500) against the journal, then its upload (0320).

Part of the host core, kept in a module of its own because it is a flow of
its own (docs/transactions.md, "Batch close"): the core hands it 0500 and
0320 requests and lends it its answer-building and journaling helpers.
Closing a batch records both sides' totals and moves the terminal to its
next batch number in the same commit as the answer. The same 0500 again
(same STAN) is answered as the first time, so a terminal that lost the
answer can ask again; another 0500 for a closed batch gets `batch_closed`
(80).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from possim.wire.batch_totals import (
    BatchTotals, Totals, TotalsError, decode_cup48, encode_cup48, read_end_of_upload_48, read_iso_totals,
    unpack_cup_upload,
)
from possim.wire.message import Message

from .journal import APPROVED, VOIDED, ClosedBatch, TerminalSession, Transaction, Unit, UploadedRecord
from .reply import Reply, shaped

if TYPE_CHECKING:
    from .core import HostCore, _Request
    from .rules import Rule

END_OF_UPLOAD_CODES = ("202", "207")
TRAILER_PROCESSING_CODE = "960000"
_ECHO = (3, 11, 15, 41, 42, 74, 75, 76, 77, 86, 87, 88, 89, 97)
BALANCED, OUT_OF_BALANCE = "1", "2"


class BatchClose:
    def __init__(self, core: HostCore):
        self.core = core
        self.dialect = core.dialect
        self.journal = core.journal
        self._split = "network_code" in self.dialect.roles and "." in self.dialect.roles["network_code"]
        """cup-style (totals in field 48, split domestic/foreign, upload records packed) or iso87-style."""
        self._domestic = tuple(str(b) for b in self.dialect.convention("domestic_bins", ["62"]))

    # ---- 0500 ----

    def _refused(self, req: _Request) -> tuple[Reply | None, Rule | None]:
        """The answer when a scenario rule forces one or the terminal is not ours; and the rule that applies."""
        core = self.core
        rule = core._rule_for(req.message, None)
        if rule is not None and rule.respond is not None:
            return core._answer_only(req, _ECHO, rule.respond, f"scenario rule {rule.name!r}", rule), rule
        if (refusal := core._unknown_terminal(req.message)) is not None:
            return core._answer_only(req, _ECHO, *refusal), rule
        return None, rule

    def totals(self, req: _Request) -> Reply:
        core, message, tid = self.core, req.message, req.message[41]
        refused, rule = self._refused(req)
        if refused is not None:
            return refused
        session = self.journal.terminal(tid)  # the batch a 0500 closes: the one it names (cup 60.2), else the open one
        if session is None or session.signed_on_date is None:
            return core._answer_only(req, _ECHO, self.dialect.response_code("not_signed_on"), f"terminal {tid} not signed on")
        if message.get(3) == TRAILER_PROCESSING_CODE:
            return core._answer_only(req, _ECHO, "00", "upload trailer: batch close complete")
        last = self.journal.last_closed_batch(tid)
        named = self.dialect.get_role(message, "batch_number")
        if last is not None and last.close_stan == message[11] and named in (None, last.batch_number):
            return self._answer(req, last, None, "retransmitted batch close: first answer repeated", rule)
        batch = named if named and named.isdigit() else session.batch_number
        closed = self.journal.closed_batch(tid, batch)
        if closed is None and batch != session.batch_number:
            return core._answer_only(req, _ECHO, self.dialect.response_code("batch_closed"),
                                     f"batch {batch} is not terminal {tid}'s open batch {session.batch_number}")
        if closed is not None:
            return core._answer_only(req, _ECHO, self.dialect.response_code("batch_closed"),
                                     f"batch {batch} of terminal {tid} is already closed")
        try:
            theirs = self._read_totals(message)
        except TotalsError as exc:
            return core._answer_only(req, _ECHO, "30", str(exc))
        ours = self.host_totals(tid, batch)
        balanced = self._compare(theirs) == self._compare(ours)
        record = ClosedBatch(tid, batch, req.business_date, req.at, balanced, _dump(theirs), _dump(ours), message[11])
        following = TerminalSession(tid, session.signed_on_date, f"{int(batch) % 999999 + 1:06d}", req.at)
        note = f"batch {batch} closed {'in balance' if balanced else 'out of balance'}"
        return self._answer(req, record, following, note, rule)

    def _answer(
        self, req: _Request, record: ClosedBatch, following: TerminalSession | None, note: str, rule: Rule | None
    ) -> Reply:
        core, message = self.core, req.message
        code = "00" if record.balanced else self.dialect.response_code("out_of_balance")
        response = core._response(message, _ECHO, code, req.now)
        if self._split:
            result = BALANCED if record.balanced else OUT_OF_BALANCE
            response[48] = encode_cup48(_load(record.terminal_totals), result)
        data = core._frame(response, req.envelope)
        unit = Unit((core._entry_in(req, note), core._entry_out(req, response, None if record.balanced else note)),
                    terminal=following, closed_batch=record if following is not None else None, at=req.at)
        self.journal.record(unit)
        return shaped(data, rule)

    def _read_totals(self, message: Message) -> BatchTotals:
        if self._split:
            text = message.get(48)
            if text is None:
                raise TotalsError("field 48: missing (the batch totals)")
            return decode_cup48(text)[0]
        return read_iso_totals(message)

    def _compare(self, totals: BatchTotals) -> tuple[Totals, ...]:
        return (totals.domestic, totals.foreign) if self._split else (totals.combined,)

    def host_totals(self, tid: str, batch: str) -> BatchTotals:
        """What the journal says the batch holds: approved debits and credits, voided ones too (their voids
        are credits of their own); reversed and declined ones count nowhere."""
        domestic, foreign = Totals(), Totals()
        for txn in self.journal.batch_transactions(tid, batch):
            side = self._side(txn)
            if side is None:
                continue
            if self._is_domestic(txn):
                domestic = domestic.add(side, txn.amount or 0)
            else:
                foreign = foreign.add(side, txn.amount or 0)
        return BatchTotals(domestic, foreign)

    def _side(self, txn: Transaction) -> str | None:
        if txn.status not in (APPROVED, VOIDED) or txn.response_code != "00" or txn.kind is None:
            return None
        kind = self.dialect.transactions.get(txn.kind)
        return kind.totals if kind is not None and kind.totals != "none" else None

    def _is_domestic(self, txn: Transaction) -> bool:
        return not self._split or (txn.pan_masked or "").startswith(self._domestic)

    # ---- 0320 ----

    def upload(self, req: _Request) -> Reply:
        core, message, tid = self.core, req.message, req.message[41]
        refused, rule = self._refused(req)
        if refused is not None:
            return refused
        session = self.journal.terminal(tid)
        named = self.dialect.get_role(message, "batch_number")
        closed = self.journal.closed_batch(tid, named) if named and named.isdigit() \
            else self.journal.last_closed_batch(tid)
        if session is None or closed is None:
            return core._answer_only(req, _ECHO, self.dialect.response_code("batch_closed"),
                                     f"upload from terminal {tid} for no closed batch")
        code = self.dialect.get_role(message, "network_code")
        try:
            if self._split and code in END_OF_UPLOAD_CODES:
                count = read_end_of_upload_48(message.get(48) or "")
                stored = len(self.journal.uploads(tid, closed.batch_number))
                note = f"end of upload of batch {closed.batch_number}: {count} records announced, {stored} received"
                return core._answer_only(req, _ECHO, "00", note, rule)
            records = self._records(req, closed.batch_number)
        except TotalsError as exc:
            return core._answer_only(req, _ECHO, "30", str(exc))
        response = core._response(message, _ECHO, "00", req.now)
        data = core._frame(response, req.envelope)
        note = f"upload of batch {closed.batch_number}: {len(records)} record(s)"
        core.journal.record(Unit((core._entry_in(req, note), core._entry_out(req, response)), uploads=records, at=req.at))
        return shaped(data, rule)

    def _records(self, req: _Request, batch: str) -> tuple[UploadedRecord, ...]:
        message, tid = req.message, req.message[41]
        if self._split:
            return tuple(
                UploadedRecord(tid, batch, r.stan, r.masked_pan, r.amount, r.card_org, req.at)
                for r in unpack_cup_upload(message.get(48) or "")
            )
        amount = message.get(4) or ""
        if not amount.isdigit():
            raise TotalsError("field 4: an uploaded transaction needs its amount")
        return (UploadedRecord(tid, batch, message[11], None, int(amount), None, req.at),)


def _dump(totals: BatchTotals) -> dict[str, object]:
    return asdict(totals)


def _load(data: dict[str, object]) -> BatchTotals:
    return BatchTotals(Totals(**data["domestic"]), Totals(**data["foreign"]))  # type: ignore[arg-type]
