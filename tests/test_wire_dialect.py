"""Dialects are data: built-ins, user YAML files built on them, clear errors
for bad files, and roles that hide where a dialect keeps a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from possim.wire.codec import Codec
from possim.wire.dialect import DialectError, builtin_names, load_dialect
from possim.wire.message import Message

HEADER_FIELDS = """\
fields:
  h: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 0}
  t: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 4}
  p: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 16}
"""


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_builtins_are_listed():
    assert builtin_names() == ["cup", "iso87ascii", "iso87binary"]
    for name in builtin_names():
        dialect = load_dialect(name)
        assert dialect.name == name
        assert dialect.source == f"built-in {name}"
        assert {"h", "t", "p", "1"} <= set(dialect.spec)
        assert all(str(n) in dialect.spec for n in range(2, 129))


def test_cup_framing_and_conventions():
    cup = load_dialect("cup")
    assert cup.framing.length == "binary2"
    assert cup.framing.tpdu == bytes.fromhex("6000000000")
    assert len(cup.framing.header) == 6
    assert cup.mac_scheme == "cup-ecb"
    assert cup.convention("transmission_datetime") is False
    assert load_dialect("iso87ascii").convention("transmission_datetime") is True
    assert cup.convention("no such thing", "fallback") == "fallback"
    assert (cup.response_code("not_signed_on"), cup.response_code("terminal_unknown")) == ("77", "97")
    iso = load_dialect("iso87binary")
    assert (iso.response_code("not_signed_on"), iso.response_code("terminal_unknown")) == ("58", "58")


def test_cup_fields_follow_the_unionpay_layout():
    """REFERENCE.md: numerics BCD counted in digits, left-aligned; 37-39, 41, 42, 49 ASCII; 43 GBK;
    52 b8; 53 n16; 55 binary LLLVAR; 60/61 BCD LLLVAR; 62/63 LLLVAR; 64 b8."""
    spec = load_dialect("cup").spec
    assert spec["t"]["data_enc"] == "b" and spec["p"]["data_enc"] == "b"
    for n in ("2", "3", "4", "11", "12", "13", "14", "22", "25", "35", "60", "61"):
        assert spec[n]["data_enc"] == "b" and spec[n]["len_count"] == "nibbles", n
        assert "left_pad" not in spec[n], f"field {n} must be left-aligned"
    for n in ("37", "38", "39", "41", "42", "49"):
        assert spec[n]["data_enc"] == "ascii", n
    assert spec["43"]["data_enc"] == "gbk"
    assert (spec["52"]["data_enc"], spec["52"]["max_len"], spec["52"]["len_type"]) == ("b", 8, 0)
    assert (spec["53"]["max_len"], spec["53"]["len_type"]) == (16, 0)
    assert (spec["55"]["data_enc"], spec["55"]["len_type"], spec["55"]["len_enc"]) == ("b", 2, "bcd")
    for n in ("60", "61", "62", "63"):
        assert (spec[n]["len_type"], spec[n]["len_enc"]) == (2, "bcd"), n
    assert (spec["64"]["data_enc"], spec["64"]["max_len"]) == ("b", 8)
    assert all(spec[n]["len_enc"] == "bcd" for n in spec if spec[n]["len_type"])


# --- user files --------------------------------------------------------------


def test_user_file_based_on_a_builtin_overrides_one_field(tmp_path):
    path = write(
        tmp_path,
        "acme.yaml",
        "name: acme\n"
        "base: iso87ascii\n"
        "fields:\n"
        "  '41': {type: ans, data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 10, desc: Long terminal ID}\n",
    )
    acme = load_dialect(path)
    base = load_dialect("iso87ascii")
    assert acme.name == "acme" and acme.source == path
    assert acme.spec["41"]["max_len"] == 10
    assert {k: v for k, v in acme.spec.items() if k != "41"} == {k: v for k, v in base.spec.items() if k != "41"}
    assert acme.framing == base.framing and acme.roles == base.roles
    codec = Codec(acme)
    message = Message("0800", {11: "000001", 41: "TERMINAL01", 70: "001"})
    data = codec.encode(message)
    assert data.endswith(b"TERMINAL01001")
    assert codec.decode(data) == message
    assert base.spec["41"]["max_len"] == 8, "the built-in is untouched"


def test_user_file_framing_keeps_what_it_does_not_mention(tmp_path):
    path = write(tmp_path, "cup4.yaml", "name: cup4\nbase: cup\nframing: {length: ascii4}\n")
    cup4 = load_dialect(path)
    assert cup4.framing.length == "ascii4"
    assert cup4.framing.tpdu == load_dialect("cup").framing.tpdu
    assert cup4.framing.header == load_dialect("cup").framing.header
    assert cup4.subfields == load_dialect("cup").subfields


def test_base_path_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    write(tmp_path / "lib", "parent.yaml", "name: parent\nbase: iso87binary\nresponses: {not_signed_on: '91'}\n")
    child = write(tmp_path / "lib", "child.yaml", "name: child\nbase: parent.yaml\n")
    monkeypatch.chdir(tmp_path)
    dialect = load_dialect(child)
    assert dialect.response_code("not_signed_on") == "91"
    assert dialect.spec == load_dialect("iso87binary").spec


@pytest.mark.parametrize(
    "text, words",
    [
        ("name: x\nbase: iso87ascii\ncolour: blue\n", "unknown key 'colour'"),
        ("base: iso87ascii\n", "name is missing"),
        ("name: [1]\nbase: iso87ascii\n", "name must be a str"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {data_enc: ascii, len_type: 0, max_len: 8}\n", "fields.41: missing 'len_enc'"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 8, size: 3}\n", "fields.41: unknown key 'size'"),
        ("name: x\nbase: iso87ascii\nfields:\n  '200': {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 8}\n", "fields.200"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {type: q, data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 8}\n", "fields.41.type"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {data_enc: klingon, len_enc: ascii, len_type: 0, max_len: 8}\n", "fields.41.data_enc"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {data_enc: ascii, len_enc: ascii, len_type: 7, max_len: 8}\n", "fields.41.len_type"),
        ("name: x\nbase: iso87ascii\nfields:\n  '41': {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: eight}\n", "fields.41.max_len"),
        ("name: x\nbase: iso87ascii\nfields:\n  '22': {type: n, data_enc: b, len_enc: bcd, len_type: 0, max_len: 3, len_count: nibbles}\n", "fields.22: packed digits of odd length need left_pad or right_pad"),
        ("name: x\nbase: iso87ascii\nfields: [1, 2]\n", "fields must be a mapping"),
        ("name: x\nbase: iso87ascii\nframing: {length: binary3}\n", "framing.length 'binary3'"),
        ("name: x\nbase: iso87ascii\nframing: {lenght: binary2}\n", "framing.lenght is not a framing setting"),
        ("name: x\nbase: iso87ascii\nframing: {tpdu: 6000000000}\n", "framing.tpdu must be a quoted hex string"),
        ("name: x\nbase: iso87ascii\nframing: {tpdu: '7000000000'}\n", "framing.tpdu"),
        ("name: x\nbase: iso87ascii\nframing: {header: 'XY'}\n", "framing.header 'XY' is not hex"),
        ("name: x\nbase: iso87ascii\nframing: {length_includes_header: maybe}\n", "framing.length_includes_header"),
        ("name: x\nbase: iso87ascii\nroles: {batch_number: '60.2'}\n", "roles.batch_number"),
        ("name: x\nbase: cup\nroles: {batch_number: '60.9'}\n", "roles.batch_number"),
        ("name: x\nbase: iso87ascii\nsubfields: {'60': [[a]]}\n", "subfields.60"),
        ("name: x\nbase: iso87ascii\nresponses: [77]\n", "responses must be a mapping"),
        ("name: x\nbase: no-such-dialect\n", "base 'no-such-dialect' is not a built-in"),
        ("name: x\n", "fields.h is missing"),
        ("name: x\nbase: iso87ascii\nfields: {'2': {data_enc: ascii\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_files_are_named_with_the_key(tmp_path, text, words):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(DialectError) as caught:
        load_dialect(path)
    assert str(caught.value).startswith(path + ":")
    assert words in str(caught.value)


def test_a_base_that_leads_back_to_itself(tmp_path):
    write(tmp_path, "a.yaml", "name: a\nbase: b.yaml\n")
    write(tmp_path, "b.yaml", "name: b\nbase: a.yaml\n")
    with pytest.raises(DialectError) as caught:
        load_dialect(str(tmp_path / "a.yaml"))
    assert "leads back to itself" in str(caught.value)


def test_unknown_name_lists_the_builtins():
    with pytest.raises(DialectError) as caught:
        load_dialect("visa-base1")
    assert "cup, iso87ascii, iso87binary" in str(caught.value)


def test_minimal_file_without_base(tmp_path):
    path = write(tmp_path, "mini.yaml", "name: mini\n" + HEADER_FIELDS)
    mini = load_dialect(path)
    assert mini.spec["1"]["data_enc"] == "ascii"  # secondary bitmap defaults to the primary's layout
    assert Codec(mini).decode(Codec(mini).encode(Message("0800"))) == Message("0800")


# --- roles and subfields -----------------------------------------------------


def test_cup_field_60_split():
    cup = load_dialect("cup")
    assert cup.split(60, "2200000100050") == {
        "transaction_type": "22",
        "batch_number": "000001",
        "network_code": "000",
        "read_capability": "5",
        "chip_condition": "0",
    }
    assert cup.split(60, "22000001") == {"transaction_type": "22", "batch_number": "000001"}
    assert cup.split(3, "000000") == {}


def test_cup_roles_live_in_field_60():
    cup = load_dialect("cup")
    message = Message("0800")
    assert cup.set_role(message, "network_code", "001") is True
    assert message[60] == "00" + "000000" + "001"
    assert cup.set_role(message, "batch_number", "000042") is True
    assert message[60] == "00" + "000042" + "001"
    assert cup.set_role(message, "transaction_type", "22") is True
    assert message[60] == "22" + "000042" + "001"
    assert cup.get_role(message, "network_code") == "001"
    assert cup.get_role(message, "batch_number") == "000042"
    assert cup.get_role(message, "transaction_type") == "22"
    assert 70 not in message


def test_cup_set_role_keeps_subfields_it_does_not_declare():
    """CUP 60 can run to 17 digits (60.6, 60.7 …); setting 60.3 must not cut them off."""
    cup = load_dialect("cup")
    message = Message("0200", {60: "22000001000" + "50" + "0001"})
    cup.set_role(message, "network_code", "201")
    assert message[60] == "22000001201" + "50" + "0001"


def test_role_values_must_fit_their_subfield():
    cup = load_dialect("cup")
    with pytest.raises(ValueError) as caught:
        cup.set_role(Message("0800"), "network_code", "01")
    assert "60.3" in str(caught.value)


def test_iso87_network_code_is_field_70():
    iso = load_dialect("iso87ascii")
    message = Message("0800")
    assert iso.set_role(message, "network_code", "301") is True
    assert message.fields == {70: "301"}
    assert iso.get_role(message, "network_code") == "301"
    assert iso.get_role(Message("0800"), "network_code") is None


def test_roles_a_dialect_does_not_have():
    iso = load_dialect("iso87binary")
    message = Message("0200")
    assert iso.set_role(message, "batch_number", "000001") is False
    assert message.fields == {}
    assert iso.get_role(message, "batch_number") is None
    assert load_dialect("cup").get_role(Message("0200"), "network_code") is None


def test_field_names_come_from_the_spec():
    assert load_dialect("cup").field_name(43) == "Card acceptor name/location (GBK)"
    assert load_dialect("cup").field_name(200) == ""


@pytest.mark.parametrize("responses", ["{not_signed_on: '777'}", "{not_signed_on: 77}", "{sleepy: '77'}"])
def test_response_codes_are_two_characters_for_a_known_situation(tmp_path, responses):
    path = tmp_path / "codes.yaml"
    path.write_text(f"name: codes\nbase: iso87ascii\nresponses: {responses}\n")
    with pytest.raises(DialectError, match=r"responses\."):
        load_dialect(str(path))
