"""The acquirer host over real TCP with a real SQLite journal: sign-on,
purchase, declines, retransmission, STAN reuse and reversals, per dialect."""

from __future__ import annotations

import threading

import pytest

from possim.acquirer.journal import APPROVED, DECLINED, ORPHAN_REVERSAL, REVERSED
from host_support import (
    CARDS, DIALECTS, MID_NO_KEYED, OPENING, TID_NO_KEYED, luhn_complete, purchase, reversal, running_host, sign_on,
)

NOT_SIGNED_ON = {"iso87ascii": "58", "iso87binary": "58", "cup": "77"}
TERMINAL_UNKNOWN = {"iso87ascii": "58", "iso87binary": "58", "cup": "97"}


@pytest.fixture(params=DIALECTS)
def host(request, tmp_path):
    with running_host(tmp_path, request.param) as running:
        yield running


def test_sign_on_then_purchase_debits_the_account(host):
    with host.terminal() as pos:
        answer = pos.exchange(sign_on(host.dialect, "000001"))
        assert (answer.mti, answer[39], answer[11], answer[41]) == ("0810", "00", "000001", "10000001")
        assert host.dialect.get_role(answer, "network_code") == "001"
        if host.dialect.name == "cup":
            assert host.dialect.get_role(answer, "batch_number") == "000001"
        request = purchase(host.dialect, "000002", amount=1250)
        answer = pos.exchange(request)
    assert answer.mti == "0210"
    assert answer[39] == "00"
    assert answer[11] == "000002" and answer[4] == "000000001250" and answer[41] == "10000001"
    assert len(answer[37]) == 12 and len(answer[38]) == 6
    assert 2 not in answer and 35 not in answer
    assert host.balance("A-1001") == OPENING["A-1001"] - 1250
    [row] = host.journal().transactions()
    assert (row.status, row.response_code, row.amount, row.posted_amount) == (APPROVED, "00", 1250, 1250)
    assert row.rrn == answer[37] and row.auth_code == answer[38]
    assert row.pan_masked == "622848*********0017"


def test_purchase_before_sign_on_is_refused(host):
    with host.terminal() as pos:
        answer = pos.exchange(purchase(host.dialect, "000001"))
    assert answer[39] == NOT_SIGNED_ON[host.dialect.name]
    assert 38 not in answer
    [row] = host.journal().transactions()
    assert (row.status, row.decline_step) == (DECLINED, "terminal_signed_on")
    assert host.balance("A-1001") == OPENING["A-1001"]


def test_unknown_terminal_cannot_sign_on(host):
    with host.terminal() as pos:
        answer = pos.exchange(sign_on(host.dialect, "000001", tid="99999999"))
        assert answer[39] == TERMINAL_UNKNOWN[host.dialect.name]
        answer = pos.exchange(purchase(host.dialect, "000002", tid="99999999"))
    assert answer[39] == TERMINAL_UNKNOWN[host.dialect.name]


def test_sign_off_ends_the_session_and_echo_needs_none(host):
    with host.terminal() as pos:
        assert pos.exchange(sign_on(host.dialect, "000001", code="301"))[39] == "00"
        assert pos.exchange(sign_on(host.dialect, "000002"))[39] == "00"
        assert pos.exchange(purchase(host.dialect, "000003"))[39] == "00"
        assert pos.exchange(sign_on(host.dialect, "000004", code="002"))[39] == "00"
        assert pos.exchange(purchase(host.dialect, "000005"))[39] == NOT_SIGNED_ON[host.dialect.name]


def _decline_cases() -> list[tuple[str, dict, str, str]]:
    unknown_card = luhn_complete("622848001999999990")
    no_issuer = luhn_complete("999999001000000000")
    return [
        ("insufficient", dict(card="insufficient", amount=5000), "51", "funds"),
        ("expired", dict(card="expired"), "54", "card_expiry"),
        ("lost", dict(card="lost"), "41", "card_status"),
        ("stolen", dict(card="stolen"), "43", "card_status"),
        ("restricted", dict(card="restricted"), "57", "card_status"),
        ("blocked", dict(card="blocked"), "05", "card_status"),
        ("over limit", dict(card="over-limit", amount=15000), "61", "account_rules"),
        ("issuer down", dict(card="issuer-down"), "91", "issuer_available"),
        ("luhn", dict(card="invalid-pan"), "14", "card_number"),
        ("no card on file", dict(pan=unknown_card), "14", "card_status"),
        ("no issuer", dict(pan=no_issuer), "15", "issuer_available"),
        ("zero amount", dict(amount=0), "13", "fields_valid"),
        ("processing code", dict(processing_code="400000"), "12", "fields_valid"),  # a transfer: no kind here
        ("currency", dict(currency="999"), "30", "fields_valid"),
        ("account currency", dict(card="usd"), "57", "account_rules"),
        ("malfunction rule", dict(amount=9601), "96", "scenario_rules"),
    ]


def test_every_decline_code_and_the_step_that_gave_it(host):
    cases = _decline_cases()
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        answers = [pos.exchange(purchase(host.dialect, f"{100 + i:06d}", **kwargs)) for i, (_, kwargs, _, _) in enumerate(cases)]
        missing = purchase(host.dialect, "000200")
        del missing.fields[22]
        answers.append(pos.exchange(missing))
    expected = [(name, code, step) for name, _, code, step in cases] + [("missing field", "30", "fields_valid")]
    assert [(name, a[39]) for (name, _, _), a in zip(expected, answers)] == [(n, c) for n, c, _ in expected]
    rows = host.journal().transactions()
    assert [(r.response_code, r.decline_step, r.status) for r in rows] == [(c, s, DECLINED) for _, c, s in expected]
    assert all(r.decline_reason for r in rows)
    assert all(38 not in a for a in answers)
    assert {b.id: b.balance for b in host.journal().balances() if not b.id.startswith("wallet:")} == OPENING


def test_keyed_entry_follows_the_merchant(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        assert pos.exchange(purchase(host.dialect, "000002", keyed=True, amount=300))[39] == "00"
        pos.exchange(sign_on(host.dialect, "000003", tid=TID_NO_KEYED, mid=MID_NO_KEYED))
        refused = pos.exchange(purchase(host.dialect, "000004", keyed=True, tid=TID_NO_KEYED, mid=MID_NO_KEYED))
        swiped = pos.exchange(purchase(host.dialect, "000005", tid=TID_NO_KEYED, mid=MID_NO_KEYED, amount=200))
    assert (refused[39], swiped[39]) == ("58", "00")
    assert host.journal().transactions()[1].decline_step == "keyed_entry"
    assert host.balance("A-1001") == OPENING["A-1001"] - 500


def test_authorization_checks_but_does_not_post(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        approved = pos.exchange(purchase(host.dialect, "000002", mti="0100", amount=4000))
        declined = pos.exchange(purchase(host.dialect, "000003", mti="0100", card="insufficient", amount=5000))
    assert (approved.mti, approved[39], declined[39]) == ("0110", "00", "51")
    assert len(approved[38]) == 6
    assert host.balance("A-1001") == OPENING["A-1001"]
    assert host.journal().transactions()[0].posted_amount == 0


def test_retransmission_gets_the_first_answer_and_posts_once(host):
    request = purchase(host.dialect, "000002", amount=700)
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        pos.send(request)
        first = pos.receive_payload()
    with host.terminal() as again:  # a terminal that reconnects to retransmit
        again.send(request)
        second = again.receive_payload()
    assert second == first
    assert host.balance("A-1001") == OPENING["A-1001"] - 700
    [row] = host.journal().transactions()
    assert row.status == APPROVED
    notes = [m.note for m in host.journal().messages() if m.direction == "in" and m.stan == "000002"]
    assert notes[0] is None and notes[1].startswith("retransmission")


def test_declined_retransmission_is_declined_the_same_way(host):
    request = purchase(host.dialect, "000002", card="insufficient", amount=5000)
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        pos.send(request)
        first = pos.receive_payload()
        pos.send(request)
        assert pos.receive_payload() == first
    assert len(host.journal().transactions()) == 1


def test_stan_reused_with_different_content_is_94(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        assert pos.exchange(purchase(host.dialect, "000002", amount=700))[39] == "00"
        reused = pos.exchange(purchase(host.dialect, "000002", amount=800))
        other_card = pos.exchange(purchase(host.dialect, "000002", amount=700, card="approve2"))
    assert (reused[39], other_card[39]) == ("94", "94")
    assert host.balance("A-1001") == OPENING["A-1001"] - 700
    assert host.balance("A-1004") == OPENING["A-1004"]
    assert len(host.journal().transactions()) == 1


def test_reversal_restores_funds_once_however_often_repeated(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        original = purchase(host.dialect, "000002", amount=2500)
        assert pos.exchange(original)[39] == "00"
        assert host.balance("A-1001") == OPENING["A-1001"] - 2500
        first = pos.exchange(reversal(host.dialect, original, "000003"))
        repeat = pos.exchange(reversal(host.dialect, original, "000003", mti="0401"))
        again = pos.exchange(reversal(host.dialect, original, "000003", mti="0401"))
    for answer in (first, repeat, again):
        assert (answer.mti, answer[39], answer[4], answer[41]) == ("0410", "00", "000000002500", "10000001")
    assert host.balance("A-1001") == OPENING["A-1001"]
    [row] = host.journal().transactions()
    assert (row.status, row.reversal_reason, row.reversal_mti) == (REVERSED, "98", "0400")
    if host.dialect.name != "cup":
        assert first[90] == reversal(host.dialect, original, "000003")[90]


def test_reversal_of_a_declined_purchase_moves_no_money(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        original = purchase(host.dialect, "000002", card="insufficient", amount=5000)
        assert pos.exchange(original)[39] == "51"
        assert pos.exchange(reversal(host.dialect, original, "000003"))[39] == "00"
    assert host.balance("A-1002") == OPENING["A-1002"]
    [row] = host.journal().transactions()
    assert row.status == DECLINED and row.reversed_at is not None


def test_orphan_reversal_is_acknowledged_and_blocks_the_late_original(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        never_arrived = purchase(host.dialect, "000002", amount=900)
        assert pos.exchange(reversal(host.dialect, never_arrived, "000003"))[39] == "00"
        assert pos.exchange(reversal(host.dialect, never_arrived, "000003", mti="0401"))[39] == "00"
        late_original = pos.exchange(never_arrived)
    assert late_original[39] == "94"
    [row] = host.journal().transactions()
    assert (row.status, row.stan, row.amount) == (ORPHAN_REVERSAL, "000002", 900)
    assert host.balance("A-1001") == OPENING["A-1001"]


def test_reversal_naming_a_key_with_other_content_reverses_nothing(host):
    """A terminal that lost its state reuses STAN 000002 for a purchase the host never saw;
    its reversal must not undo the host's own 000002."""
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        assert pos.exchange(purchase(host.dialect, "000002", amount=500))[39] == "00"
        never_arrived = purchase(host.dialect, "000002", amount=999)
        assert pos.exchange(reversal(host.dialect, never_arrived, "000003"))[39] == "00"
    [row] = host.journal().transactions()
    assert (row.status, row.amount) == (APPROVED, 500)
    assert host.balance("A-1001") == OPENING["A-1001"] - 500
    notes = [m.note for m in host.journal().messages() if m.mti.startswith("040")]
    assert any(note and "amount 999 is not the original's 500" in note for note in notes)


def test_journal_survives_a_restart(tmp_path):
    request = None
    with running_host(tmp_path, "cup") as host:
        with host.terminal() as pos:
            pos.exchange(sign_on(host.dialect, "000001"))
            request = purchase(host.dialect, "000002", amount=1000)
            pos.send(request)
            first = pos.receive_payload()
        keys = dict(host.mac_keys)
    with running_host(tmp_path, "cup") as host:
        host.mac_keys.update(keys)  # the terminal keeps the working keys the first host sent; so does the journal
        with host.terminal() as pos:
            assert pos.exchange(purchase(host.dialect, "000003", amount=500))[39] == "00"  # still signed on
            pos.send(request)
            assert pos.receive_payload() == first
        assert host.balance("A-1001") == OPENING["A-1001"] - 1500
        rrns = [r.rrn for r in host.journal().transactions()]
    assert len(set(rrns)) == 2


def test_many_terminals_at_once(tmp_path):
    connections, each, amount = 12, 8, 100
    with running_host(tmp_path, "cup") as host:
        with host.terminal() as pos:
            pos.exchange(sign_on(host.dialect, "000001"))
        codes: list[str] = []
        lock = threading.Lock()

        def run_terminal(index: int) -> None:
            with host.terminal() as pos:
                for n in range(each):
                    answer = pos.exchange(purchase(host.dialect, f"{index:02d}{n:04d}", amount=amount))
                    with lock:
                        codes.append(answer[39])

        threads = [threading.Thread(target=run_terminal, args=(i + 1,)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == ["00"] * connections * each
        assert host.balance("A-1001") == OPENING["A-1001"] - connections * each * amount
        assert len(host.journal().transactions()) == connections * each


def test_the_host_logs_one_line_per_answer_without_card_data(host, caplog):
    caplog.set_level("INFO", logger="possim.host")
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        pos.exchange(purchase(host.dialect, "000002", amount=1250, card="insufficient"))
    answers = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert len(answers) == 2
    assert answers[1].endswith("0200 tid 10000001 stan 000002 amount 000000001250 -> 0210 51 (insufficient funds)")
    assert not any(CARDS["insufficient"]["pan"][:-1] in r.getMessage() for r in caplog.records)


def test_journal_totals_never_add_different_currencies(host):
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        assert pos.exchange(purchase(host.dialect, "000002", amount=1250))[39] == "00"
        assert pos.exchange(purchase(host.dialect, "000003", amount=700, card="usd", currency="840"))[39] == "00"
        assert pos.exchange(purchase(host.dialect, "000004", amount=300))[39] == "00"
    totals = {(t.status, t.currency): (t.count, t.amount) for t in host.journal().totals()}
    assert totals == {("approved", "156"): (2, 1550), ("approved", "840"): (1, 700)}


def test_a_repeat_of_a_reversed_purchase_is_not_approved_again(host):
    """A terminal swapped for a fresh one reuses a STAN with the same content: the first answer no longer stands."""
    with host.terminal() as pos:
        pos.exchange(sign_on(host.dialect, "000001"))
        first = purchase(host.dialect, "000002", amount=1250)
        assert pos.exchange(first)[39] == "00"
        assert pos.exchange(reversal(host.dialect, first, "000003"))[39] == "00"
        assert pos.exchange(first)[39] == "94"
    assert host.balance("A-1001") == OPENING["A-1001"]
