"""Open-platform request signing: a known answer computed outside possim, every
refusal code, the ±300 s window to the second, replays, and tampering with
each part of the request."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import datetime, timedelta, timezone

import pytest

from possim.wire.api_signature import (
    HEADERS,
    NONCE_HEADER,
    PARTNER_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    Verifier,
    canonical_request,
    new_nonce,
    sign,
)

KEY = b"possim-test-key-0001"
PARTNER = "partner-001"
T0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)  # unix 1700000000
BODY = b'{"out_order_no":"A1","amount":100}'
PATH = "/v1/orders?lang=en"
NONCE = "abcdefghijklmnop0123456789_-XYZ0"
# Computed once with openssl, independently of possim:
#   printf 'POST\n/v1/orders?lang=en\n1700000000\nabcdefghijklmnop0123456789_-XYZ0\n%s' \
#     "$(printf '%s' '{"out_order_no":"A1","amount":100}' | openssl dgst -sha256 -r | cut -d' ' -f1)" \
#     | openssl dgst -sha256 -hmac possim-test-key-0001
POST_SIGNATURE = "6822ef777d2848522a6e2b6f4cca2cb9160a469f99265b67011795d23fe3a4c3"
# The same for `GET /v1/orders/A1`, nonce nonce-for-a-get-request, no body (sha256 of the empty string).
GET_SIGNATURE = "e2f5c68e8b51f2815502eeb156248b267773a74553a1a9f24bbb2e42e3b52648"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def keys(partner: str) -> bytes | None:
    return {PARTNER: KEY, "wallet:alice": b"alice-wallet-secret"}.get(partner)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def verifier(clock: Clock) -> Verifier:
    return Verifier(keys, clock)


def signed(nonce: str = NONCE, *, at: datetime = T0, partner: str = PARTNER, key: bytes = KEY) -> dict[str, str]:
    return sign(key, "POST", PATH, BODY, partner, at, nonce)


def refused(verifier: Verifier, headers: dict[str, str], *, method: str = "POST", path: str = PATH,
            body: bytes = BODY) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verifier.verify(method, path, body, headers)
    return caught.value


def test_known_answer_matches_openssl_and_an_independent_hmac():
    headers = sign(KEY, "post", PATH, BODY, PARTNER, T0, NONCE)
    assert headers == {
        PARTNER_HEADER: PARTNER,
        TIMESTAMP_HEADER: "1700000000",
        NONCE_HEADER: NONCE,
        SIGNATURE_HEADER: POST_SIGNATURE,
    }
    canonical = "\n".join(["POST", PATH, "1700000000", NONCE, hashlib.sha256(BODY).hexdigest()])
    assert hmac.new(KEY, canonical.encode(), hashlib.sha256).hexdigest() == POST_SIGNATURE
    assert canonical_request("post", PATH, "1700000000", NONCE, BODY) == canonical


def test_known_answer_without_a_body_hashes_the_empty_string():
    headers = sign(KEY, "GET", "/v1/orders/A1", b"", PARTNER, T0, "nonce-for-a-get-request")
    assert headers[SIGNATURE_HEADER] == GET_SIGNATURE
    assert canonical_request("GET", "/v1/orders/A1", "1700000000", "nonce-for-a-get-request", b"").endswith(
        "\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_a_naive_datetime_is_local_time_like_the_wire_clocks():
    local = T0.astimezone().replace(tzinfo=None)
    assert sign(KEY, "GET", "/", b"", PARTNER, local, NONCE)[TIMESTAMP_HEADER] == "1700000000"
    assert Verifier(keys, Clock(local)).verify("POST", PATH, BODY, signed()) == PARTNER


def test_a_genuine_request_names_its_partner(verifier: Verifier):
    assert verifier.verify("POST", PATH, BODY, signed()) == PARTNER


def test_the_method_is_compared_upper_case(verifier: Verifier):
    assert verifier.verify("post", PATH, BODY, signed()) == PARTNER


def test_wallet_partners_sign_with_their_account_secret(verifier: Verifier):
    headers = signed(partner="wallet:alice", key=b"alice-wallet-secret")
    assert verifier.verify("POST", PATH, BODY, headers) == "wallet:alice"


@pytest.mark.parametrize("transform", [str.lower, str.upper, lambda name: name.swapcase()])
def test_header_names_are_found_whatever_their_case(verifier: Verifier, transform):
    headers = {transform(name): value for name, value in signed().items()}
    assert verifier.verify("POST", PATH, BODY, headers) == PARTNER


@pytest.mark.parametrize("missing", HEADERS)
def test_each_missing_header_is_named(verifier: Verifier, missing: str):
    headers = {name: value for name, value in signed().items() if name != missing}
    error = refused(verifier, headers)
    assert error.code == "MISSING_HEADER"
    assert missing in error.message


@pytest.mark.parametrize(
    "name, value",
    [
        (PARTNER_HEADER, ""),
        (PARTNER_HEADER, "has space"),
        (PARTNER_HEADER, "p" * 129),
        (TIMESTAMP_HEADER, "-1700000000"),
        (TIMESTAMP_HEADER, "1700000000.5"),
        (TIMESTAMP_HEADER, "9" * 5000),
        (NONCE_HEADER, "short-nonce-15ch"[:15]),
        (NONCE_HEADER, "n" * 65),
        (NONCE_HEADER, "abcdefghijklmnop+"),
        (SIGNATURE_HEADER, POST_SIGNATURE.upper()),
        (SIGNATURE_HEADER, POST_SIGNATURE[:-1]),
        (SIGNATURE_HEADER, POST_SIGNATURE[:-1] + "g"),
    ],
)
def test_a_malformed_header_is_refused_before_anything_else(verifier: Verifier, name: str, value: str):
    error = refused(verifier, {**signed(), name: value})
    assert error.code == "MISSING_HEADER"
    assert name in error.message


def test_a_header_given_twice_in_different_cases_is_refused(verifier: Verifier):
    headers = {**signed(), NONCE_HEADER.lower(): "another-nonce-0123456789"}
    error = refused(verifier, headers)
    assert error.code == "MISSING_HEADER" and NONCE_HEADER in error.message


def test_an_unknown_partner_is_refused(verifier: Verifier):
    error = refused(verifier, signed(partner="partner-999"))
    assert error.code == "UNKNOWN_PARTNER"


def test_a_partner_with_an_empty_key_counts_as_unknown(clock: Clock):
    verifier = Verifier(lambda partner: b"", clock)
    assert refused(verifier, signed()).code == "UNKNOWN_PARTNER"


def test_an_unknown_partner_is_reported_before_a_stale_timestamp(verifier: Verifier):
    error = refused(verifier, signed(partner="nobody", at=T0 - timedelta(days=1)))
    assert error.code == "UNKNOWN_PARTNER"


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
def test_timestamps_within_300_seconds_either_way_are_fresh(verifier: Verifier, offset: int):
    assert verifier.verify("POST", PATH, BODY, signed(at=T0 + timedelta(seconds=offset))) == PARTNER


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_timestamps_301_seconds_away_are_stale(verifier: Verifier, offset: int):
    error = refused(verifier, signed(at=T0 + timedelta(seconds=offset)))
    assert error.code == "STALE_TIMESTAMP"
    assert TIMESTAMP_HEADER in error.message


def test_a_narrower_window_is_honoured(clock: Clock):
    verifier = Verifier(keys, clock, window=30)
    assert verifier.verify("POST", PATH, BODY, signed(NONCE, at=T0 - timedelta(seconds=30))) == PARTNER
    assert refused(verifier, signed("other-nonce-000000", at=T0 - timedelta(seconds=31))).code == "STALE_TIMESTAMP"


def test_a_stale_timestamp_is_reported_before_a_bad_signature(verifier: Verifier):
    headers = {**signed(at=T0 - timedelta(seconds=301)), SIGNATURE_HEADER: "0" * 64}
    assert refused(verifier, headers).code == "STALE_TIMESTAMP"


def test_the_wrong_key_is_a_bad_signature(verifier: Verifier):
    error = refused(verifier, signed(key=b"not-the-partner-key"))
    assert error.code == "BAD_SIGNATURE"


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", PATH, b'{"out_order_no":"A1","amount":1000}'),  # body tampered
        ("POST", PATH, BODY + b" "),  # one byte more
        ("POST", PATH, b""),  # body dropped
        ("POST", "/v1/orders", BODY),  # query dropped
        ("POST", "/v1/orders?lang=fr", BODY),  # query tampered
        ("POST", "/v1/orders/A1?lang=en", BODY),  # path tampered
        ("POST", "/V1/orders?lang=en", BODY),  # path case matters
        ("PUT", PATH, BODY),  # method tampered
    ],
)
def test_tampering_with_method_path_query_or_body_breaks_the_signature(verifier: Verifier, method, path, body):
    error = refused(verifier, signed(), method=method, path=path, body=body)
    assert error.code == "BAD_SIGNATURE"


@pytest.mark.parametrize(
    "name, value", [(TIMESTAMP_HEADER, "1700000001"), (NONCE_HEADER, "abcdefghijklmnop0123456789_-XYZ1")]
)
def test_tampering_with_the_signed_headers_breaks_the_signature(verifier: Verifier, name: str, value: str):
    assert refused(verifier, {**signed(), name: value}).code == "BAD_SIGNATURE"


def test_a_replayed_request_is_refused(verifier: Verifier):
    headers = signed()
    assert verifier.verify("POST", PATH, BODY, headers) == PARTNER
    error = refused(verifier, headers)
    assert error.code == "REPLAYED_REQUEST"
    assert NONCE_HEADER in error.message


def test_a_nonce_reused_on_another_request_is_a_replay(verifier: Verifier):
    verifier.verify("POST", PATH, BODY, signed())
    other = sign(KEY, "GET", "/v1/orders/A1", b"", PARTNER, T0 + timedelta(seconds=5), NONCE)
    assert refused(verifier, other, method="GET", path="/v1/orders/A1", body=b"").code == "REPLAYED_REQUEST"


def test_nonces_are_per_partner(verifier: Verifier):
    verifier.verify("POST", PATH, BODY, signed())
    wallet = signed(partner="wallet:alice", key=b"alice-wallet-secret")
    assert verifier.verify("POST", PATH, BODY, wallet) == "wallet:alice"


def test_a_bad_signature_does_not_use_up_the_nonce(verifier: Verifier):
    forged = signed(key=b"attacker-guess")
    assert refused(verifier, forged).code == "BAD_SIGNATURE"
    assert verifier.verify("POST", PATH, BODY, signed()) == PARTNER


def test_a_refused_stale_request_does_not_use_up_the_nonce(verifier: Verifier, clock: Clock):
    assert refused(verifier, signed(at=T0 - timedelta(seconds=400))).code == "STALE_TIMESTAMP"
    assert verifier.verify("POST", PATH, BODY, signed()) == PARTNER


def test_a_nonce_is_remembered_as_long_as_its_timestamp_is_fresh(verifier: Verifier, clock: Clock):
    early = signed(at=T0 + timedelta(seconds=300))  # a client clock 5 minutes fast
    verifier.verify("POST", PATH, BODY, early)
    clock.now = T0 + timedelta(seconds=600)  # the request's timestamp is still within the window
    assert refused(verifier, early).code == "REPLAYED_REQUEST"
    clock.now = T0 + timedelta(seconds=601)
    assert refused(verifier, early).code == "STALE_TIMESTAMP"


def test_seen_nonces_older_than_the_window_are_forgotten(verifier: Verifier, clock: Clock):
    rng = random.Random(6)
    for second in range(0, 1200, 2):
        clock.now = T0 + timedelta(seconds=second)
        verifier.verify("POST", PATH, BODY, signed(new_nonce(rng), at=clock.now))
    # Memory is private; this is the only way to see it stays bounded: the last 300 s of requests, one per 2 s.
    assert len(verifier._seen) == 151
    clock.now += timedelta(seconds=301)
    verifier.verify("POST", PATH, BODY, signed(new_nonce(rng), at=clock.now))
    assert len(verifier._seen) == 1


def test_errors_never_quote_the_key_or_the_expected_signature(verifier: Verifier):
    forged = {**signed(), SIGNATURE_HEADER: "0" * 64}
    error = refused(verifier, forged)
    assert error.code == "BAD_SIGNATURE"
    assert POST_SIGNATURE not in str(error) and KEY.decode() not in str(error)


def test_new_nonce_is_32_url_safe_characters_and_repeatable_from_a_seed():
    nonce = new_nonce(random.Random(1))
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", nonce)
    assert nonce == new_nonce(random.Random(1))
    assert nonce != new_nonce(random.Random(2))
    assert len({new_nonce(random.Random(seed)) for seed in range(200)}) == 200


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"key": b""}, "key"),
        ({"method": "PO ST"}, "method"),
        ({"path": "v1/orders"}, "path"),
        ({"path": "/v1/orders\nX"}, "path"),
        ({"partner": ""}, PARTNER_HEADER),
        ({"nonce": "too-short"}, NONCE_HEADER),
        ({"nonce": "has space in the nonce"}, NONCE_HEADER),
        ({"at": datetime(1969, 12, 31, 23, 59, tzinfo=timezone.utc)}, TIMESTAMP_HEADER),
    ],
)
def test_sign_refuses_what_a_verifier_would_refuse(kwargs: dict, words: str):
    arguments = {"key": KEY, "method": "POST", "path": PATH, "body": BODY, "partner": PARTNER, "at": T0,
                 "nonce": NONCE} | kwargs
    with pytest.raises(ValueError, match=re.escape(words)) as caught:
        sign(**arguments)
    assert KEY.decode() not in str(caught.value)
