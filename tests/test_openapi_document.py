"""docs/openapi.yaml is the contract the HTTP server is written from: it must be
valid OpenAPI 3.1, every reference must land, every example must fit its
schema, and its error codes, statuses and signing scheme must agree with
each other and with possim.wire.api_signature."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from possim.wire import api_signature
from possim.wire.emv_qr import decode_mpm

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
BASE = "urn:possim:openapi"
STATUS = {
    400: {"INVALID_REQUEST", "MISSING_HEADER"},
    401: {"BAD_SIGNATURE", "UNKNOWN_PARTNER", "STALE_TIMESTAMP"},
    404: {"ORDER_NOT_FOUND", "REFUND_NOT_FOUND", "PAYMENT_NOT_FOUND"},
    409: {"REPLAYED_REQUEST", "OUT_ORDER_NO_REUSED", "ORDER_PAID", "ORDER_CLOSED", "ORDER_EXPIRED", "ORDER_NOT_PAID",
          "REFUND_EXCEEDS_REMAINING", "AMOUNT_MISMATCH", "CURRENCY_MISMATCH", "WRONG_PASSWORD"},
    500: {"INTERNAL_ERROR"},
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


def pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document are allowed"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: {part!r} not found"
        node = node[part]
    return node


def resolved(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(doc, node["$ref"])
    return node


def escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(where, method, operation, JSON pointer of the operation) of every path and webhook."""
    for section in ("paths", "webhooks"):
        for name, item in doc.get(section, {}).items():
            for method in METHODS:
                if method in item:
                    yield f"{section} {name}", method, item[method], f"#/{section}/{escape(name)}/{method}"


def media_types(doc: dict[str, Any]) -> Iterator[tuple[str, int | None, str, dict[str, Any], str]]:
    """(where, response status or None for a request, media type, media type object, its pointer)."""
    for where, method, op, at in operations(doc):
        body = op.get("requestBody")
        if body is not None:
            body_at = resolved_at(doc, body, f"{at}/requestBody")
            for kind, media in resolved(doc, body).get("content", {}).items():
                yield f"{where} {method} request", None, kind, media, f"{body_at}/content/{escape(kind)}"
        for status, response in op.get("responses", {}).items():
            response_at = resolved_at(doc, response, f"{at}/responses/{status}")
            for kind, media in resolved(doc, response).get("content", {}).items():
                code = None if status == "default" else int(status)
                yield f"{where} {method} {status}", code, kind, media, f"{response_at}/content/{escape(kind)}"


def resolved_at(doc: dict[str, Any], node: Any, at: str) -> str:
    while isinstance(node, dict) and "$ref" in node:
        at = node["$ref"]
        node = pointer(doc, at)
    return at


def examples(doc: dict[str, Any], media: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    if "example" in media:
        yield "example", media["example"]
    for name, example in media.get("examples", {}).items():
        yield name, resolved(doc, example)["value"]


def error_enum(doc: dict[str, Any]) -> list[str]:
    return doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]):
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_the_document_holds_only_json_values(doc: dict[str, Any]):
    # An unquoted date or time in YAML would load as a datetime and be no JSON at all.
    json.dumps(doc)


def test_every_reference_resolves(doc: dict[str, Any]):
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert len(refs) > 50
    for ref in refs:
        pointer(doc, ref)


def test_every_operation_the_brief_names_is_there(doc: dict[str, Any]):
    found = {(where.split(" ", 1)[1], method) for where, method, _, _ in operations(doc)}
    assert found == {
        ("/v1/orders", "post"),
        ("/v1/orders/{out_order_no}", "get"),
        ("/v1/orders/{out_order_no}/qr.png", "get"),
        ("/v1/orders/{out_order_no}/close", "post"),
        ("/v1/orders/{out_order_no}/refunds", "post"),
        ("/v1/orders/{out_order_no}/refunds/{out_refund_no}", "get"),
        ("/wallet/v1/payments", "post"),
        ("/wallet/v1/payments", "get"),
        ("/wallet/v1/payments/{wallet_txn_id}/confirm", "post"),
        ("/wallet/v1/balance", "get"),
        ("orderEvent", "post"),
    }


def test_error_codes_are_the_contract_and_include_the_verifiers(doc: dict[str, Any]):
    enum = error_enum(doc)
    assert len(enum) == len(set(enum))
    assert set(enum) == set().union(*STATUS.values())
    assert set(typing.get_args(api_signature.ErrorCode)) <= set(enum)


def test_every_error_example_uses_a_known_code_under_its_status(doc: dict[str, Any]):
    enum = set(error_enum(doc))
    shown: set[str] = set()
    for where, status, _, media, _ in media_types(doc):
        for name, value in examples(doc, media):
            if isinstance(value, dict) and "error" in value:
                code = value["error"]["code"]
                assert code in enum, f"{where} example {name}: {code} is not in the Error enum"
                assert status in STATUS and code in STATUS[status], f"{where} example {name}: {code} under {status}"
                shown.add(code)
    assert shown == enum, f"codes no example shows: {sorted(enum - shown)}"


def test_every_example_fits_its_schema(doc: dict[str, Any]):
    registry = Registry().with_resource(BASE, DRAFT202012.create_resource(doc))
    checked = 0
    for where, _, _, media, at in media_types(doc):
        if "schema" not in media:
            continue
        validator = Draft202012Validator({"$ref": f"{BASE}{at}/schema"}, registry=registry)
        for name, value in examples(doc, media):
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]
            assert not errors, f"{where} example {name}: {errors}"
            checked += 1
    assert checked >= 40


def test_bad_bodies_do_not_fit_the_request_schemas(doc: dict[str, Any]):
    registry = Registry().with_resource(BASE, DRAFT202012.create_resource(doc))

    def fits(schema: str, value: Any) -> bool:
        return Draft202012Validator({"$ref": f"{BASE}#/components/schemas/{schema}"}, registry=registry).is_valid(value)

    assert fits("CreateOrderRequest", {"out_order_no": "A_1-b", "amount": 1})
    assert not fits("CreateOrderRequest", {"out_order_no": "A 1", "amount": 1})
    assert not fits("CreateOrderRequest", {"out_order_no": "A" * 33, "amount": 1})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 0})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": "100"})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 1, "currency": 156})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 1, "expires_in": 59})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 1, "notify_url": "ftp://x/"})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 1, "merchant_id": "1234"})
    assert not fits("CreateOrderRequest", {"out_order_no": "A1", "amount": 1, "colour": "red"})
    assert fits("CloseOrderRequest", {}) and not fits("CloseOrderRequest", {"reason": "x"})
    assert not fits("CreateRefundRequest", {"out_refund_no": "R1"})
    assert not fits("WalletPayRequest", {"amount": 100})
    assert not fits("WalletConfirmRequest", {})


def test_every_signed_operation_requires_all_four_headers(doc: dict[str, Any]):
    schemes = doc["components"]["securitySchemes"]
    for name, scheme in schemes.items():
        assert scheme["type"] == "apiKey" and scheme["in"] == "header", name
        assert scheme["name"] in api_signature.HEADERS, name
    for where, method, op, _ in operations(doc):
        requirements = op.get("security", doc["security"])
        assert len(requirements) == 1, f"{where} {method}: one requirement, all headers in it"
        names = {schemes[scheme]["name"] for scheme in requirements[0]}
        assert names == set(api_signature.HEADERS), f"{where} {method}"
        wallet = "/wallet/" in where
        assert ("walletPartner" in requirements[0]) == wallet, f"{where} {method}: wrong partner scheme"


def test_every_signed_operation_documents_the_signature_failures(doc: dict[str, Any]):
    for where, method, op, _ in operations(doc):
        if where.startswith("paths"):
            assert {"400", "401", "409", "500"} <= set(op["responses"]), f"{where} {method}"


def test_the_worked_signing_example_is_what_api_signature_makes(doc: dict[str, Any]):
    example = doc["x-signing-example"]
    body = example["body"].encode("utf-8")
    assert hashlib.sha256(body).hexdigest() == example["body_sha256"]
    canonical = api_signature.canonical_request(
        example["method"], example["path"], example["timestamp"], example["nonce"], body
    )
    assert canonical == example["canonical"]
    headers = api_signature.sign(
        bytes.fromhex(example["key_hex"]), example["method"], example["path"], body, example["partner"],
        datetime.fromtimestamp(int(example["timestamp"]), timezone.utc), example["nonce"],
    )
    assert headers == {
        "X-Possim-Partner": example["partner"],
        "X-Possim-Timestamp": example["timestamp"],
        "X-Possim-Nonce": example["nonce"],
        "X-Possim-Signature": example["signature"],
    }


def test_example_payloads_are_valid_codes_naming_their_orders(doc: dict[str, Any]):
    payloads = 0
    for where, _, _, media, _ in media_types(doc):
        for name, value in examples(doc, media):
            order = value.get("order", value) if isinstance(value, dict) else None
            if not isinstance(order, dict) or not isinstance(order.get("payload"), str):
                continue
            decoded = decode_mpm(order["payload"], strict=True)
            assert decoded.valid, f"{where} example {name}: {decoded.errors}"
            if "order_no" in order:
                assert decoded.fields["62"]["05"] == order["order_no"], f"{where} example {name}"
                assert decoded.fields["01"] == "12"
            payloads += 1
    assert payloads >= 5
