"""The customer's wallet app (terminal/wallet_app.py): it logs into a wallets.yaml account, shows payment codes
the wallet network accepts, reads a merchant's code from its text or its picture, and pays, lists, confirms and
reads its balance through a running host's wallet entry — with a POS terminal scanning the app's own code over
ISO 8583 for the payments that wait for the password. Every error is one a person can act on.
"""

from __future__ import annotations

import io
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from PIL import Image

from host_support import MID, TID, TestTerminal, host_clock, sign_on
from possim.acquirer.core import build_host
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostThread
from possim.fixtures import FixtureError, load_fixture
from possim.terminal.wallet_app import WalletApp, WalletAppError, login, payment_code, scanned_payload
from possim.wire import payment_code as codes
from possim.wire.clock import SteppingClock
from possim.wire.message import Message
from possim.wire.qr_data import decode_qr_data, encode_qr_data
from possim.wire.qr_image import qr_png
from possim.wire.signed_http import HttpApiError, SignedClient

PARTNERS = Partners.from_fixtures()
ACCOUNTS = load_fixture("wallets.yaml")["accounts"]
PAYLOAD = ("00020101021226370014com.possim.pay01158983100481600015204931153031565406125.005802CN5925CITY NON-TAX "
           "REVENUE HALL6007HUANGPU6232051623111500000000420708WEB0000163047790")
"""The create example of docs/openapi.yaml."""


# ---- without a host ----


def test_login_reads_the_account_from_wallets_yaml_and_never_shows_its_secret() -> None:
    alice = login("alice")
    assert (alice.name, alice.channel, alice.number, alice.currency) == ("alice", "wechat", "100001", "156")
    assert alice.secret == bytes.fromhex(ACCOUNTS["alice"]["secret"])
    assert ACCOUNTS["alice"]["secret"].lower() not in repr(alice).lower() and "secret" not in repr(alice)


def test_an_unknown_account_is_refused_naming_it_and_the_known_ones() -> None:
    with pytest.raises(WalletAppError, match=r"no wallet account 'mallory' in .*wallets\.yaml \(accounts: alice, bob"):
        login("mallory")


def test_a_secret_that_is_not_hex_is_a_fixture_error_that_does_not_quote_it(tmp_path: Path) -> None:
    data = load_fixture("wallets.yaml")
    data["accounts"]["alice"]["secret"] = "not-hex-but-a-secret-1234"
    (tmp_path / "wallets.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(FixtureError, match=r"accounts\.alice\.secret") as refused:
        login("alice", tmp_path)
    assert "not-hex-but-a-secret" not in str(refused.value)


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_the_payment_code_shown_is_the_accounts_and_valid_for_this_step_and_the_next(name: str) -> None:
    account = login(name)
    at = host_clock()()
    code = payment_code(account, at)
    parts = codes.read(code)
    assert (parts.channel, parts.account_number) == (account.channel, account.number)
    assert code == codes.generate(account.channel, account.number, account.secret, at)
    assert codes.verify(code, account.secret, at)
    assert codes.verify(code, account.secret, at + timedelta(seconds=30))
    assert not codes.verify(code, account.secret, at + timedelta(seconds=90))
    assert not codes.verify(code, login("dave").secret, at)  # another account's secret does not make it


def test_a_code_is_scanned_from_its_text_or_its_picture(tmp_path: Path) -> None:
    assert scanned_payload(PAYLOAD) == PAYLOAD
    picture = tmp_path / "counter.png"
    picture.write_bytes(qr_png(PAYLOAD))
    assert scanned_payload(str(picture)) == PAYLOAD
    unnamed = tmp_path / "photo"
    unnamed.write_bytes(qr_png(PAYLOAD))
    assert scanned_payload(str(unnamed)) == PAYLOAD  # a file is read as a picture whatever its name


def test_a_picture_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WalletAppError, match="no image file .*missing.png"):
        scanned_payload(str(tmp_path / "missing.png"))
    blank = tmp_path / "blank.png"
    image = io.BytesIO()
    Image.new("L", (200, 200), 255).save(image, format="PNG")
    blank.write_bytes(image.getvalue())
    with pytest.raises(WalletAppError, match="blank.png: png: no QR code found"):
        scanned_payload(str(blank))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(WalletAppError, match="broken.png: png: not a readable image"):
        scanned_payload(str(broken))


def test_an_unreachable_network_is_a_clear_error_naming_where() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = WalletApp(login("alice"), f"127.0.0.1:{port}", clock=host_clock())
    # The app lets the client's HttpApiError through rather than a WalletAppError of its own.
    with pytest.raises((WalletAppError, HttpApiError), match=rf"cannot reach http://127\.0\.0\.1:{port}"):
        app.balance()
    with pytest.raises((WalletAppError, HttpApiError), match="cannot reach"):
        app.pay(PAYLOAD)


# ---- against a running host ----


@dataclass
class Counter:
    """A host serving terminals and the HTTP API, and what talks to it."""

    clock: SteppingClock
    thread: HostThread
    tcp_port: int
    network: str
    rng: random.Random = field(default_factory=lambda: random.Random(3))
    """Nonces of every client here: one seeded sequence, so no two requests share one."""

    def app(self, name: str) -> WalletApp:
        return WalletApp(login(name), self.network, clock=self.clock, rng=self.rng)

    def order(self, out_order_no: str, amount: int) -> str:
        key = PARTNERS.key("cityhall-web")
        assert key is not None
        client = SignedClient(f"http://{self.network}", "cityhall-web", key, self.clock, self.rng)
        answer = client.post("/v1/orders", {"out_order_no": out_order_no, "amount": amount})
        assert answer.status in (200, 201), answer.body  # 200: the same order asked for again
        return str(answer.json()["payload"])

    def scan(self, app: WalletApp, *amounts: int) -> list[tuple[str, dict[str, str]]]:
        """A POS signs on and scans the code the app shows now, once per amount: each response code and QR data."""
        dialect = self.thread.core.dialect
        spec = dialect.transaction("qr_sale")
        answers = []
        with TestTerminal(self.tcp_port, dialect) as pos:
            assert pos.exchange(sign_on(dialect, "000001"))[39] == "00"
            for stan, amount in enumerate(amounts, start=2):
                sale = Message(spec.mti, {3: spec.processing_code, 4: f"{amount:012d}", 11: f"{stan:06d}", 12: "100000",
                                          13: "0615", 25: spec.condition, 41: TID, 42: MID, 49: "156"})
                dialect.set_role(sale, "transaction_type", spec.type_code)
                dialect.set_role(sale, "batch_number", "000001")
                dialect.set_role(sale, "qr_data", encode_qr_data({"payment_code": payment_code(app.account, self.clock())}))
                answer = pos.exchange(sale)
                answers.append((answer[39], decode_qr_data(dialect.get_role(answer, "qr_data") or "")))
        return answers


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[Counter]:
    clock = host_clock()
    core = build_host("cup", tmp_path / "journal.sqlite", clock=clock)
    thread = HostThread(core, http=("127.0.0.1", 0), partners=PARTNERS)
    _, tcp_port = thread.start()
    assert thread.http_address is not None
    try:
        yield Counter(clock, thread, tcp_port, f"127.0.0.1:{thread.http_address[1]}")
    finally:
        thread.stop()
        core.close()


def test_the_app_pays_a_code_and_its_balance_goes_down(counter: Counter) -> None:
    alice = counter.app("alice")
    opening = ACCOUNTS["alice"]["balance"]
    assert alice.balance() == {"account": "alice", "currency": "156", "balance": opening}
    paid = alice.pay(counter.order("APP-1", 2500))
    assert (paid["status"], paid["response_code"], paid["amount"], paid["balance"]) == ("paid", "00", 2500, opening - 2500)
    assert alice.balance()["balance"] == opening - 2500
    with pytest.raises(WalletAppError, match=r"^ORDER_PAID: order \d+ is already paid"):
        alice.pay(counter.order("APP-1", 2500))
    with pytest.raises(WalletAppError, match="^WRONG_PASSWORD: "):
        alice.pay(counter.order("APP-2", 30001), password="000000")
    assert alice.pay(counter.order("APP-2", 30001), password="123456")["status"] == "paid"
    declined = counter.app("bob").pay(counter.order("APP-3", 2000))  # bob holds 15.00: an answer, not an error
    assert (declined["status"], declined["response_code"], declined["balance"]) == ("declined", "51", 1500)
    app_by_url = WalletApp(login("alice"), f"http://{counter.network}", clock=counter.clock)
    assert app_by_url.balance()["balance"] == opening - 2500 - 30001


def test_a_scanned_code_waits_in_the_app_until_the_password_is_typed(counter: Counter) -> None:
    alice = counter.app("alice")
    opening = ACCOUNTS["alice"]["balance"]
    assert alice.waiting() == []
    [(code, data)] = counter.scan(alice, 40000)
    assert (code, data["status"]) == ("09", "paying")
    [waiting] = alice.waiting()
    assert (waiting["status"], waiting["amount"], waiting["order_no"]) == ("paying", 40000, data["order_no"])
    with pytest.raises(WalletAppError, match="^WRONG_PASSWORD: "):
        alice.confirm("000000")
    assert alice.balance()["balance"] == opening
    paid = alice.confirm("123456")
    assert (paid["status"], paid["wallet_txn_id"], paid["balance"]) == ("paid", waiting["wallet_txn_id"], opening - 40000)
    assert alice.waiting() == []
    with pytest.raises(WalletAppError, match="wallet alice has no payment waiting for its password"):
        alice.confirm("123456")


def test_with_several_payments_waiting_the_app_asks_which_one(counter: Counter) -> None:
    carol = counter.app("carol")  # she always wants her password
    answers = counter.scan(carol, 100, 200)
    assert [code for code, _ in answers] == ["09", "09"]
    waiting = carol.waiting()
    assert sorted(p["amount"] for p in waiting) == [100, 200]
    with pytest.raises(WalletAppError, match="wallet carol has 2 payments waiting .*: name one"):
        carol.confirm("111111")
    second = next(p for p in waiting if p["amount"] == 200)
    assert carol.confirm("111111", second["wallet_txn_id"])["status"] == "paid"
    assert [p["amount"] for p in carol.waiting()] == [100]
    assert carol.confirm("111111")["amount"] == 100
    with pytest.raises(WalletAppError, match="^PAYMENT_NOT_FOUND: "):
        counter.app("alice").confirm("123456", second["wallet_txn_id"])
