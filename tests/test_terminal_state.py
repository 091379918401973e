"""Terminal state in a real SQLite file: what survives a new process, and what is never written."""

from datetime import date, datetime

import pytest

from possim.terminal.state import BatchEntry, PendingReversal, StateError, TerminalState, default_state_path
from possim.wire.message import Message

TID = "10000001"
ORIGINAL = Message("0200", {3: "000000", 4: "000000001250", 11: "000007", 22: "021", 25: "00", 41: TID, 49: "156"})


def reversal(**changes) -> PendingReversal:
    values = dict(
        original=ORIGINAL, batch_number=1, reason="98", reversal_stan=None, attempts=0,
        masked_pan="622848*********0017", created=datetime(2025, 3, 14, 9, 0),
    )
    values.update(changes)
    return PendingReversal(**values)


def entry(stan: str, amount: int = 1250) -> BatchEntry:
    return BatchEntry(
        1, stan, "000000000123", "A1B2C3", amount, "156", "622848*********0017", datetime(2025, 3, 14, 9, 0),
        Message("0200", {**ORIGINAL.fields, 11: stan}),
    )


def test_stan_continues_across_reopen(tmp_path):
    path = tmp_path / "t.sqlite"
    state = TerminalState(TID, path)
    assert [state.next_stan() for _ in range(3)] == ["000001", "000002", "000003"]
    state.close()
    again = TerminalState(TID, path)
    assert again.next_stan() == "000004"


def test_stan_wraps_after_999999(tmp_path):
    state = TerminalState(TID, tmp_path / "t.sqlite")
    state._db.execute("UPDATE terminal SET stan = 999998")
    assert [state.next_stan() for _ in range(3)] == ["999999", "000001", "000002"]


def test_pending_reversal_survives_reopen(tmp_path):
    path = tmp_path / "t.sqlite"
    state = TerminalState(TID, path)
    state.save_reversal(reversal(reversal_stan="000008", attempts=2))
    state.close()
    owed = TerminalState(TID, path).pending_reversal()
    assert owed == reversal(reversal_stan="000008", attempts=2)
    assert owed.original_stan == "000007" and owed.amount == 1250


def test_sign_on_and_batch_number_persist(tmp_path):
    path = tmp_path / "t.sqlite"
    state = TerminalState(TID, path)
    assert state.batch_number == 1 and state.signed_on_date is None
    state.mark_signed_on(date(2025, 3, 14), 7)
    state.close()
    again = TerminalState(TID, path)
    assert again.signed_on_date == date(2025, 3, 14)
    assert again.batch_number == 7


def test_acknowledged_reversal_leaves_pending_and_batch(tmp_path):
    state = TerminalState(TID, tmp_path / "t.sqlite")
    state.answered(entry("000005"))
    state.answered(entry("000007", 990))
    assert [e.stan for e in state.open_batch()] == ["000005", "000007"]
    owed = reversal()
    state.save_reversal(owed)
    state.reversal_acknowledged(owed)
    assert state.pending_reversal() is None
    assert [e.stan for e in state.open_batch()] == ["000005"]
    assert state.last_approved().stan == "000005"


def test_an_answer_clears_the_owed_reversal_and_records_an_approval_together(tmp_path):
    state = TerminalState(TID, tmp_path / "t.sqlite")
    state.save_reversal(reversal())
    state.answered(None)
    assert state.pending_reversal() is None and state.open_batch() == []
    state.save_reversal(reversal())
    state.answered(entry("000007"))
    assert state.pending_reversal() is None and [e.stan for e in state.open_batch()] == ["000007"]


def test_state_refuses_card_data(tmp_path):
    state = TerminalState(TID, tmp_path / "t.sqlite")
    with pytest.raises(ValueError, match="field 35"):
        state.save_reversal(reversal(original=Message("0200", {**ORIGINAL.fields, 35: "6228480010000000017D3012"})))
    with pytest.raises(ValueError, match="field 2"):
        state.answered(BatchEntry(**{**entry("1").__dict__, "original": Message("0200", {2: "6228480010000000017"})}))
    assert state.pending_reversal() is None and state.open_batch() == []


def test_a_state_file_belongs_to_one_terminal(tmp_path):
    path = tmp_path / "t.sqlite"
    TerminalState(TID, path).close()
    with pytest.raises(StateError, match="10000001.*10000002"):
        TerminalState("10000002", path)


def test_default_path_is_per_terminal_under_user_data():
    assert default_state_path(TID).parts[-2:] == ("terminals", f"{TID}.sqlite")
    assert default_state_path(TID) != default_state_path("10000002")


def test_unusable_path_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="file"):
        TerminalState(TID, blocker / "t.sqlite")
