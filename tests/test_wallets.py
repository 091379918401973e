"""The wallet networks stub: the shipped file loads, a broken one is refused
naming file and key (never a secret), a code finds its account only while
fresh and only at its own provider, and each refusal has its code."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import yaml

from possim.acquirer.wallets import REASONS, WalletAccount, WalletDecline, WalletNetwork
from possim.fixtures import FixtureError, load_fixture
from possim.wire import payment_code

AT = datetime(2024, 5, 1, 12, 0, 10)


@pytest.fixture(scope="module")
def network() -> WalletNetwork:
    return WalletNetwork.from_fixtures()


def account(network: WalletNetwork, name: str) -> WalletAccount:
    found = network.account(name)
    assert found is not None
    return found


def code_of(wallet: WalletAccount, at: datetime = AT) -> str:
    return payment_code.generate(wallet.provider, wallet.number, wallet.secret, at)


def write(folder, change) -> None:
    """The shipped wallets.yaml, changed by `change`, into `folder`."""
    data = load_fixture("wallets.yaml")
    change(data)
    (folder / "wallets.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def test_shipped_file(network):
    assert [a.name for a in network.accounts()] == ["alice", "bob", "carol", "dave"]
    alice = account(network, "alice")
    assert (alice.provider, alice.number, alice.currency, alice.opening_balance) == ("wechat", "100001", "156", 500000)
    assert (alice.password_above, alice.frozen, len(alice.secret)) == (30000, False, 20)
    assert alice.journal_account_id == "wallet:alice"
    assert account(network, "bob").opening_balance == 1500
    assert account(network, "carol").password_above == 0
    assert account(network, "dave").frozen
    assert network.account("erin") is None
    assert {a.provider for a in network.accounts()} == set(payment_code.CHANNELS)
    secrets = {a.secret for a in network.accounts()}
    assert len(secrets) == 4


def test_providers(network):
    wechat = network.provider("wechat")
    assert wechat is not None and (wechat.name, wechat.txn_prefix) == ("WeChat-style wallet", "4200")
    assert network.provider("alipay").txn_prefix == "2088"
    assert network.provider("unionpay").txn_prefix == "6200"
    assert network.provider("paypal") is None


def test_repr_shows_no_secret_or_password(network):
    alice = account(network, "alice")
    shown = repr(alice)
    assert alice.secret.hex() not in shown.lower() and "123456" not in shown and "secret" not in shown


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave"])
def test_a_fresh_code_finds_its_account(network, name):
    wallet = account(network, name)
    assert network.account_for_code(code_of(wallet), AT) == wallet
    assert network.account_for_code(code_of(wallet), AT + timedelta(seconds=30)) == wallet  # a step late: still good


def test_an_expired_code_is_declined_14(network):
    alice = account(network, "alice")
    with pytest.raises(WalletDecline) as caught:
        network.account_for_code(code_of(alice), AT + timedelta(seconds=90))
    assert caught.value.code == "14"
    assert "expired" in caught.value.reason


def test_a_code_made_with_another_accounts_secret_is_declined_14(network):
    alice, bob = account(network, "alice"), account(network, "bob")
    forged = payment_code.generate("wechat", alice.number, bob.secret, AT)
    with pytest.raises(WalletDecline) as caught:
        network.account_for_code(forged, AT)
    assert caught.value.code == "14"


def test_a_code_of_a_provider_with_no_such_account_is_declined_14(network):
    alice = account(network, "alice")
    wrong_provider = payment_code.generate("alipay", alice.number, alice.secret, AT)
    with pytest.raises(WalletDecline) as caught:
        network.account_for_code(wrong_provider, AT)
    assert caught.value.code == "14"
    assert "no alipay wallet account" in caught.value.reason
    assert alice.number not in str(caught.value)


@pytest.mark.parametrize("bad", ["", "13000", "99" + "0" * 16, "1310000112345678x9", "28" + "0" * 20])
def test_an_unreadable_code_is_declined_14_without_quoting_it(network, bad):
    with pytest.raises(WalletDecline) as caught:
        network.account_for_code(bad, AT)
    assert caught.value.code == "14"
    assert "unreadable payment code" in caught.value.reason
    if len(bad) > 4:
        assert bad not in str(caught.value)


def test_a_unionpay_code_with_a_bad_luhn_digit_is_declined_14(network):
    code = code_of(account(network, "carol"))
    with pytest.raises(WalletDecline, match="Luhn") as caught:
        network.account_for_code(code[:-1] + str((int(code[-1]) + 1) % 10), AT)
    assert caught.value.code == "14"


def test_a_code_for_a_provider_the_file_lacks_is_declined_14(tmp_path):
    write(tmp_path, lambda d: (d["providers"].pop("unionpay"), d["accounts"].pop("carol")))
    network = WalletNetwork.from_fixtures(tmp_path)
    carol = account(WalletNetwork.from_fixtures(), "carol")
    with pytest.raises(WalletDecline, match="no unionpay wallet network") as caught:
        network.account_for_code(code_of(carol), AT)
    assert caught.value.code == "14"


def test_password(network):
    alice, carol = account(network, "alice"), account(network, "carol")
    assert network.check_password(alice, "123456")
    assert not network.check_password(alice, "123457")
    assert not network.check_password(alice, "12345")
    assert not network.check_password(alice, "")
    assert not network.check_password(carol, "123456")
    assert not network.needs_password(alice, 30000)
    assert network.needs_password(alice, 30001)
    assert network.needs_password(carol, 1)


def test_decisions(network):
    alice, bob, dave = account(network, "alice"), account(network, "bob"), account(network, "dave")
    assert network.decide(alice, 1250, "156", 500000) is None
    assert network.decide(alice, 500000, "156", 500000) is None
    assert network.decide(alice, 500001, "156", 500000) == "51"
    assert network.decide(bob, 2000, "156", bob.opening_balance) == "51"
    assert network.decide(alice, 1250, "840", 500000) == "57"
    assert network.decide(dave, 1, "156", 200000) == "62"
    assert network.decide(dave, 1, "840", 0) == "62"  # frozen comes first
    assert network.decide(alice, 600000, "840", 500000) == "57"  # then currency, then funds
    assert set(REASONS) == {"62", "57", "51"}


def test_txn_id(network):
    assert network.txn_id("wechat", AT, 1) == "4200" + "20240501" + "000000000001"
    assert network.txn_id("alipay", AT, 999999999999) == "2088" + "20240501" + "999999999999"
    assert network.txn_id("unionpay", datetime(2025, 12, 31, 23, 59), 0) == "6200" + "20251231" + "0" * 12
    with pytest.raises(ValueError, match="sequence must be 0 to 999999999999"):
        network.txn_id("wechat", AT, 10**12)
    with pytest.raises(ValueError, match="sequence"):
        network.txn_id("wechat", AT, -1)
    with pytest.raises(ValueError, match="no wallet provider 'paypal'"):
        network.txn_id("paypal", AT, 1)


def test_wallet_decline_carries_code_and_reason():
    decline = WalletDecline("14", "why")
    assert (decline.code, decline.reason, str(decline)) == ("14", "why", "14: why")


def test_a_folder_without_wallets_yaml_falls_back_to_the_shipped_file(tmp_path):
    assert [a.name for a in WalletNetwork.from_fixtures(tmp_path).accounts()] == ["alice", "bob", "carol", "dave"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["accounts"]["bob"].update(provider="paypal"), "accounts.bob.provider: 'paypal' is not in `providers`"),
        (lambda d: d["providers"].update(paypal={"name": "P", "txn_prefix": "1"}), "providers.paypal: not a payment code channel"),
        (lambda d: d["accounts"]["alice"].update(number="10001"), "accounts.alice.number: must be 6 digits"),
        (lambda d: d["accounts"]["alice"].update(number="10000a"), "accounts.alice.number: must be 6 digits"),
        (lambda d: d["accounts"]["dave"].update(number="100001"), "accounts.dave.number: wechat account alice has the same number"),
        (lambda d: d["accounts"]["carol"].pop("secret"), "accounts.carol: lacks `secret`"),
        (lambda d: d["accounts"]["carol"].pop("number"), "accounts.carol: lacks `number`"),
        (lambda d: d["accounts"]["bob"].pop("balance"), "accounts.bob: lacks `balance`"),
        (lambda d: d["providers"]["wechat"].pop("txn_prefix"), "providers.wechat: lacks `txn_prefix`"),
        (lambda d: d["providers"]["wechat"].update(txn_prefix="42A0"), "providers.wechat.txn_prefix: must be digits"),
        (lambda d: d["accounts"]["bob"].update(balance=15.0), "accounts.bob.balance: must be a whole number"),
        (lambda d: d["accounts"]["bob"].update(password_above=-1), "accounts.bob.password_above: must be a whole number"),
        (lambda d: d["accounts"]["bob"].update(currency="CNY"), "accounts.bob.currency: must be a 3-digit"),
        (lambda d: d["accounts"]["bob"].update(currency="999"), "accounts.bob.currency: 999 is not a known"),
        (lambda d: d["accounts"]["bob"].update(password="65432"), "accounts.bob.password: must be 6 digits"),
        (lambda d: d["accounts"]["bob"].update(secret="ABCDEF0123"), "accounts.bob.secret: must be hex of at least 16 bytes"),
        (lambda d: d["accounts"]["bob"].update(secret="Z" * 40), "accounts.bob.secret: must be hex"),
        (lambda d: d["accounts"]["dave"].update(frozen="yes please"), "accounts.dave.frozen: must be true or false"),
        (lambda d: d.pop("accounts"), "`accounts` must be a non-empty mapping"),
        (lambda d: d.update(providers=["wechat"]), "`providers` must be a non-empty mapping"),
    ],
)
def test_a_broken_file_is_refused_naming_file_and_key(tmp_path, change, words):
    write(tmp_path, change)
    with pytest.raises(FixtureError) as caught:
        WalletNetwork.from_fixtures(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "wallets.yaml") in message
    assert words in message
    for wallet in WalletNetwork.from_fixtures().accounts():
        assert wallet.secret.hex().upper() not in message and wallet.password not in message


def test_a_broken_password_is_not_quoted(tmp_path):
    write(tmp_path, lambda d: d["accounts"]["bob"].update(password="65432a"))
    with pytest.raises(FixtureError) as caught:
        WalletNetwork.from_fixtures(tmp_path)
    assert "65432a" not in str(caught.value)
