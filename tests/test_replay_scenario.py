"""The scenario loader: real YAML files in tmp_path, the shipped schema, the built-in fixtures (and a folder of
one's own); every bad input is one error naming file, line and key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from possim.terminal.replay.model import ACTIONS, Fault, Matcher
from possim.terminal.replay.scenario import ScenarioError, load_scenario, load_scenarios, schema

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "fixtures" / "scenarios"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return str(caught.value)


def doc_example() -> str:
    """The scenario shown in docs/replay.md, as written there."""
    text = (ROOT / "docs" / "replay.md").read_text(encoding="utf-8")
    return re.search(r"```yaml\n(.*?)```", text, re.S).group(1)


FULL = """
description: every part of the format
tags: [qr, fees]
terminals:
  pos: "10000001"
  slow: {tid: "10000002", timeout: 1.5, reversal_retries: 0, pin_pad: false}
variables:
  price: 1250
  who: alice
steps:
  - signon:
  - name: sale with a held answer
    terminal: slow
    purchase: {card: approve, amount: "${price}", entry: chip, pin: card}
    fields: {"25": "08", "048": null}
    fault: {delay: 2.5}
    outcome: no_answer
    reversal: {mti: "0410", "039": {one_of: ["00", "12"]}}
    capture: {held_stan: request.011}
  - purchase: {card: "6228 4800 1000 0000 017", amount: 100}
    expect: {mti: 0210, "39": {equals: present}, 4: echo, "37": {matches: "^[0-9]{12}$"}}
    result: {approved: true, reversal.acknowledged: absent}
    capture: {rrn: "37", order: result.order_no}
    check:
      journal:
        - where: {rrn: "${rrn}", stan: "${held_stan}"}
          expect: {status: approved}
      terminal: {pending_reversal: false}
      batch: {count: 2}
  - void: {stan: "${held_stan}"}
    outcome: refused
    error: {matches: "no sale"}
  - qr_scan: {amount: 500, wallet: "${who}"}
    fault: {drop: true}
  - wallet_pay: {wallet: bob, payload: "order ${order}"}
    fault: {close: true}
  - fee_query: {pay_code: "1234"}
  - raw: |
      0800 2020
      0100 00C0 0000
  - raw_frame: "00 2e 60"
  - wait: {seconds: 0.5}
"""


def test_a_scenario_of_every_part_loads_into_the_model(tmp_path):
    path = write(tmp_path, "cases/full.yaml", FULL)
    scenario = load_scenario(path)

    assert scenario.name == "full" and scenario.path == path and scenario.tags == ("qr", "fees")
    assert scenario.dialect == "cup" and scenario.variables == {"price": 1250, "who": "alice"}
    assert scenario.needs == {"journal", "http", "finance"}
    assert scenario.terminals["pos"].tid == "10000001" and scenario.terminals["pos"].overrides == {}
    assert scenario.terminals["slow"].overrides == {"timeout": 1.5, "reversal_retries": 0, "pin_pad": False}
    signon, held, sale, void, scan, pay, fee, raw, frame, wait = scenario.steps

    assert (signon.index, signon.name, signon.terminal, signon.action, signon.args) == (1, "step 1", "pos", "signon", {})
    assert held.name == "sale with a held answer" and held.terminal == "slow"
    assert held.args == {"card": "approve", "amount": "${price}", "entry": "chip", "pin": "card"}
    assert held.fields == {25: "08", 48: None}
    assert held.fault == Fault("delay", 2.5, held.fault.at) and held.fault.at.line == 15
    assert held.outcome == "no_answer" and held.expect == {}
    assert held.reversal["mti"].value == "0410"
    assert (held.reversal["39"].kind, held.reversal["39"].value) == ("one_of", ["00", "12"])
    assert held.capture == {"held_stan": "request.11"}
    assert str(held.at) == f"{path}:11: steps[1]"

    assert {k: (m.kind, m.value) for k, m in sale.expect.items()} == {
        "mti": ("equals", "0210"), "39": ("equals", "present"), "4": ("echo", None), "37": ("matches", "^[0-9]{12}$")}
    assert sale.expect["4"].at.key == "steps[2].expect.4" and sale.expect["4"].at.line == 20
    assert {k: (m.kind, m.value) for k, m in sale.result.items()} == {
        "approved": ("equals", True), "reversal.acknowledged": ("absent", None)}
    assert sale.capture == {"rrn": "37", "order": "result.order_no"}
    (journal,) = sale.checks.journal
    assert journal.where == {"rrn": "${rrn}", "stan": "${held_stan}"} and journal.count is None
    assert journal.expect == {"status": Matcher("equals", "approved", journal.expect["status"].at)}
    assert journal.at.key == "steps[2].check.journal[0]" and journal.at.line == 25
    assert sale.checks.terminal["pending_reversal"].value is False
    assert sale.checks.batch["count"].value == 2

    assert void.outcome == "refused" and (void.error.kind, void.error.value) == ("matches", "no sale")
    assert scan.fault.kind == "drop" and pay.fault.kind == "close"
    assert raw.args == {"hex": "08002020010000C00000"}
    assert frame.args == {"hex": "002e60"}
    assert wait.args == {"seconds": 0.5} and fee.action == "fee_query"


def test_defaults_name_terminal_and_dialect_file_beside_the_scenario(tmp_path):
    dialect = (ROOT / "wire" / "dialects" / "iso87ascii.yaml").read_text(encoding="utf-8")
    write(tmp_path, "mine.yaml", dialect)
    path = write(tmp_path, "plain.yaml", """
        dialect: mine.yaml
        steps:
          - signon: {}
        """)
    scenario = load_scenario(path)
    assert scenario.name == "plain" and scenario.description == "" and scenario.tags == ()
    assert scenario.dialect == str(tmp_path / "mine.yaml")
    assert list(scenario.terminals) == ["pos"] and scenario.terminals["pos"].tid == "10000001"
    assert scenario.steps[0].terminal == "pos" and scenario.needs == frozenset()


def test_the_docs_example_loads_and_the_shipped_schema_accepts_it(tmp_path):
    jsonschema.Draft202012Validator.check_schema(schema())
    text = doc_example()
    jsonschema.validate(yaml.safe_load(text), schema(), cls=jsonschema.Draft202012Validator)
    scenario = load_scenario(write(tmp_path, "void.yaml", text))
    assert scenario.name == "purchase then void" and [s.action for s in scenario.steps] == ["signon", "purchase", "void"]
    assert scenario.steps[2].args == {"stan": "${stan}"} and scenario.needs == {"journal"}


def test_the_schema_knows_exactly_the_models_actions():
    step = schema()["$defs"]["step"]
    assert [branch["required"][0] for branch in step["oneOf"]] == list(ACTIONS)
    assert set(ACTIONS) <= set(step["properties"])


def test_a_folder_loads_every_yaml_under_it_sorted(tmp_path):
    for name in ("b.yaml", "a.yml", "sub/c.yaml"):
        write(tmp_path, f"pack/{name}", "steps: [{signon: {}}]\n")
    write(tmp_path, "pack/notes.txt", "not a scenario")
    single = write(tmp_path, "z.yaml", "steps: [{signon: {}}]\n")
    scenarios = load_scenarios([tmp_path / "pack", single])
    assert [s.name for s in scenarios] == ["a", "b", "c", "z"]


def test_a_path_that_is_neither_file_nor_folder_is_named(tmp_path):
    with pytest.raises(ScenarioError, match=re.escape(f"{tmp_path / 'gone'}: no such file or folder")):
        load_scenarios([tmp_path / "gone"])


def test_two_scenarios_of_one_name_name_both_files(tmp_path):
    first = write(tmp_path, "a.yaml", "name: sale\nsteps: [{signon: {}}]\n")
    second = write(tmp_path, "b.yaml", "description: x\nname: sale\nsteps: [{signon: {}}]\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([tmp_path])
    assert str(caught.value) == f"{second}:2: name: scenario name 'sale' is also the name of {first}"


def test_fixtures_dir_is_where_terminals_come_from(tmp_path):
    write(tmp_path, "fx/terminals.yaml", """
        terminals:
          - {tid: "20000001", mid: "898310048169999"}
        """)
    path = write(tmp_path, "s.yaml", "terminals: {till: \"20000001\"}\nsteps: [{signon: {}}]\n")
    assert load_scenario(path, fixtures_dir=tmp_path / "fx").terminals["till"].tid == "20000001"
    assert error_of(path).startswith(f"{path}:1: terminals.till: terminal '20000001' is not in terminals.yaml")


# ---- bad input: one error naming file, line and key ----

def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
            expect: {"39": "00"
        """)
    assert error_of(path) == f"{path}:4: not valid YAML: expected ',' or '}}', but got '<stream end>'"


def test_duplicate_key(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            expect: {"39": "00"}
            expect: {"39": "05"}
        """)
    assert error_of(path) == f"{path}:4: steps[0].expect: written twice (first on line 3)"


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "s.yaml", """
        name: x
        varaibles: {price: 1}
        steps: [{signon: {}}]
        """)
    assert error_of(path) == f"{path}:2: varaibles: unknown key (did you mean variables?)"


def test_unknown_step_key(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
          - purchase: {card: approve, amount: 100}
            expcet: {"39": "00"}
        """)
    assert error_of(path) == f"{path}:4: steps[1].expcet: unknown key (did you mean expect?)"


def test_unknown_matcher_key(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
            expect:
              "39": {match: "0."}
        """)
    assert error_of(path) == f"{path}:4: steps[0].expect.39.match: unknown key (did you mean matches?)"


def test_two_actions_in_one_step(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            void: {}
        """)
    assert error_of(path) == (f"{path}:3: steps[0].void: a second action: the step already has purchase, "
                              "and a step has exactly one")


def test_no_action_in_a_step(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - name: nothing
            expect: {"39": "00"}
        """)
    assert error_of(path).startswith(f"{path}:2: steps[0]: no action: a step needs exactly one of signon, purchase,")


def test_missing_required_argument(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
          - refund:
              card: approve
              amount: 100
        """)
    assert error_of(path) == f"{path}:3: steps[1].refund: rrn is missing (needed: card, amount, rrn)"


def test_wrong_type(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase:
              card: approve
              amount: twelve
        """)
    assert error_of(path) == f"{path}:4: steps[0].purchase.amount: expected an amount: whole minor units, or a ${{name}}, got 'twelve'"


def test_a_number_where_text_is_wanted_says_quote_it(tmp_path):
    path = write(tmp_path, "s.yaml", "terminals: {pos: 10000001}\nsteps: [{signon: {}}]\n")
    assert error_of(path) == (f"{path}:1: terminals.pos: expected a terminal ID of terminals.yaml, or {{tid: ID, "
                              "timeout: S, reversal_retries: N, pin_pad: BOOL, track_key: BOOL}, got 10000001 (quote it)")


def test_a_fault_is_exactly_one(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
            fault: {drop: true, close: true}
        """)
    assert error_of(path).startswith(f"{path}:3: steps[0].fault: expected a fault: exactly one of")


def test_unknown_card(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase: {card: aprove, amount: 100}
        """)
    assert error_of(path).startswith(f"{path}:2: steps[0].purchase.card: no card 'aprove': not a card in cards.yaml (approve,")


def test_a_pan_failing_luhn_is_refused_masked(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
          - balance: {card: "4111111111111112"}
        """)
    message = error_of(path)
    assert message.startswith(f"{path}:3: steps[1].balance.card: PAN 411111******1112 fails the Luhn check")
    assert "4111111111111112" not in message


def test_unknown_terminal(tmp_path):
    path = write(tmp_path, "s.yaml", """
        terminals:
          pos: "10000001"
          other: {tid: "99999999", timeout: 2}
        steps: [{signon: {}}]
        """)
    assert error_of(path).startswith(f"{path}:3: terminals.other: terminal '99999999' is not in terminals.yaml (known: 10000001")


def test_unknown_wallet(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - qr_order: {amount: 100}
            capture: {payload: result.payload}
          - wallet_pay: {wallet: mallory, payload: "${payload}"}
        """)
    assert error_of(path).startswith(f"{path}:4: steps[1].wallet_pay.wallet: no wallet account 'mallory' in ")


def test_bad_hex_names_the_offset(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
          - raw: |
              0800 2020
              01G0
        """)
    assert error_of(path) == f"{path}:3: steps[1].raw: not hex: 'G' at offset 10 of the hex digits (byte 5)"


def test_odd_hex(tmp_path):
    path = write(tmp_path, "s.yaml", "steps:\n  - raw_frame: \"00 2e 6\"\n")
    assert error_of(path) == f"{path}:2: steps[0].raw_frame: 5 hex digits: a byte takes two, so the count must be even"


def test_undefined_reference(tmp_path):
    path = write(tmp_path, "s.yaml", """
        variables: {price: 1250}
        steps:
          - purchase: {card: approve, amount: "${price}"}
            capture: {rrn: "37"}
          - void: {stan: "${stan}"}
        """)
    assert error_of(path) == (f"{path}:5: steps[1].void.stan: ${{stan}} is not defined before this step "
                              "(variables: price; captured earlier: rrn)")


def test_reference_to_a_capture_of_a_later_step(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            expect: {"37": "${rrn}"}
          - purchase: {card: approve, amount: 100}
            capture: {rrn: "37"}
        """)
    assert error_of(path) == (f"{path}:3: steps[0].expect.37: ${{rrn}} is not defined before this step "
                              "(variables: none; captured earlier: none); step 2 captures it later")


def test_a_steps_own_capture_is_for_its_check_not_its_expect(tmp_path):
    ok = write(tmp_path, "ok.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            capture: {rrn: "37"}
            check: {journal: [{where: {rrn: "${rrn}"}, count: 1}]}
        """)
    assert load_scenario(ok).steps[0].checks.journal[0].count == 1
    bad = write(tmp_path, "bad.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            capture: {rrn: "37"}
            result: {rrn: "${rrn}"}
        """)
    assert error_of(bad).startswith(f"{bad}:4: steps[0].result.rrn: ${{rrn}} is not defined before this step")
    assert error_of(bad).endswith("this step captures it after its answer: use it in its check or a later step")


def test_a_capture_cannot_shadow_a_variable(tmp_path):
    path = write(tmp_path, "s.yaml", """
        variables: {rrn: "000000000001"}
        steps:
          - purchase: {card: approve, amount: 100}
            capture: {rrn: "37"}
        """)
    assert error_of(path) == f"{path}:4: steps[0].capture.rrn: rrn is a variable; a capture cannot replace it"


def test_bad_regex(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - signon: {}
            expect:
              "39": {matches: "^(00|05$"}
        """)
    assert error_of(path).startswith(f"{path}:4: steps[0].expect.39.matches: not a regular expression: missing )")


def test_unknown_alias(tmp_path):
    path = write(tmp_path, "s.yaml", """
        terminals: {pos: "10000001", two: "10000002"}
        steps:
          - signon: {}
            terminal: three
        """)
    assert error_of(path) == f"{path}:4: steps[0].terminal: no terminal 'three' in this scenario (terminals: pos, two)"


def test_echo_only_on_an_answer(tmp_path):
    path = write(tmp_path, "s.yaml", """
        steps:
          - purchase: {card: approve, amount: 100}
            result: {amount: echo}
        """)
    assert error_of(path).startswith(f"{path}:3: steps[0].result.amount: echo compares an answer's field")


def test_an_unknown_dialect(tmp_path):
    path = write(tmp_path, "s.yaml", "dialect: cupp\nsteps: [{signon: {}}]\n")
    assert error_of(path).startswith(f"{path}:1: dialect: no dialect 'cupp'")


# ---- the regression pack ----

@pytest.mark.skipif(not PACK.is_dir(), reason="fixtures/scenarios/ is not written yet")
def test_every_scenario_of_the_regression_pack_loads():
    scenarios = load_scenarios([PACK])
    assert scenarios and len({s.name for s in scenarios}) == len(scenarios)
