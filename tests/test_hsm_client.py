"""The host's HSM client, in-process and over real TCP sockets on 127.0.0.1.

Replies are checked against published values: the test LMK check value
7D22274C5745C5A1 (NC), the [ThalesSim] BU vector (ZPK KCV 6F1E3F74F826B7EB)
and the [psec] Visa PVV 8523 for PIN 4524 (see tests/test_hsm_device.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from possim.hsm_mock import pinblock
from possim.hsm_mock.client import HsmReply, HsmUnavailable, LocalHsm, TcpHsm, connect_hsm
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.lmk import PVK, TPK, VariantLmk
from possim.hsm_mock.server import HsmServer

LMK_CHECK = "7D22274C5745C5A1"
BU_ZPK = "011U1EF828AA8F6B80EB83E19FBC373F3A85"
BU_ZPK_KCV = "6F1E3F74F826B7EB"

LMK = VariantLmk.test()
PSEC_PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PSEC_PAN = "1122334455667788"
TPK_CLEAR = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


def dc_fields(pin: str) -> str:
    """DC fields for the [psec] card (PVKI 1, PVV 8523 is PIN 4524's)."""
    tpk = "U" + LMK.encrypt(TPK_CLEAR, TPK, "U").hex().upper()
    pvk = "U" + LMK.encrypt(PSEC_PVK, PVK, "U").hex().upper()
    block = pinblock.encipher(TPK_CLEAR, 0, pin, PSEC_PAN).hex().upper()
    return f"{tpk}{pvk}{block}01{PSEC_PAN[-13:-1]}18523"


class ServerThread:
    """An HsmServer on its own event loop in a background thread, so blocking clients can call it."""

    def __init__(self, port: int = 0):
        self.loop = asyncio.new_event_loop()
        self.server = HsmServer(Hsm(LMK, random.Random(1)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host, self.port = self._run(self.server.start("127.0.0.1", port))

    def _run(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def stop(self) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = ServerThread()
    yield running
    if running.thread.is_alive():
        running.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- LocalHsm ------------------------------------------------------------------


def test_local_hsm_answers_nc_bu_and_dc() -> None:
    client = LocalHsm(Hsm(LMK))
    nc = client.call("NC", "")
    assert nc.ok and nc.response == "ND" and nc.fields[:16] == LMK_CHECK
    assert client.call("BU", BU_ZPK) == HsmReply("BV", "00", BU_ZPK_KCV)
    assert client.call("DC", dc_fields("4524")) == HsmReply("DD", "00", "")
    wrong = client.call("DC", dc_fields("4525"))
    assert not wrong.ok and wrong.error_code == "01"
    client.close()


def test_local_hsm_error_codes_are_replies_not_exceptions() -> None:
    client = connect_hsm(None)
    assert isinstance(client, LocalHsm)
    assert client.call("XX", "") == HsmReply("XY", "68", "")
    assert client.call("DC", "garbage").error_code == "15"
    with pytest.raises(ValueError, match="command"):
        client.call("D", "")


def test_connect_hsm_picks_the_transport() -> None:
    hsm = Hsm(LMK)
    local = connect_hsm(None, hsm)
    assert isinstance(local, LocalHsm) and local.hsm is hsm
    remote = connect_hsm("127.0.0.1:1500")
    assert isinstance(remote, TcpHsm) and remote.address == "127.0.0.1:1500"
    for bad in ("1500", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            connect_hsm(bad)


# ---- TcpHsm against HsmServer -----------------------------------------------------


def test_tcp_hsm_keeps_one_connection_and_a_running_header(server: ServerThread) -> None:
    client = TcpHsm(server.host, server.port)
    try:
        assert client.call("NC", "").fields[:16] == LMK_CHECK
        first = client._sock
        assert client.call("BU", BU_ZPK) == HsmReply("BV", "00", BU_ZPK_KCV)
        assert client.call("DC", dc_fields("4524")).ok
        assert client.call("DC", dc_fields("1234")).error_code == "01"
        assert client.call("ZZ", "").error_code == "68"  # the HSM answers and keeps the link
        assert client._sock is first and client._sequence == 5
    finally:
        client.close()


def test_tcp_hsm_is_safe_to_share_between_threads(server: ServerThread) -> None:
    client = TcpHsm(server.host, server.port, timeout=10)

    def one(index: int) -> HsmReply:
        return client.call("DC", dc_fields("4524" if index % 2 else "4525"))

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(one, range(40)))
    finally:
        client.close()
    assert [reply.error_code for reply in replies] == ["01" if i % 2 == 0 else "00" for i in range(40)]


def test_tcp_hsm_reconnects_once_after_the_server_restarts(server: ServerThread) -> None:
    client = TcpHsm(server.host, server.port)
    try:
        assert client.call("NC", "").ok
        server.stop()  # closes our kept connection
        again = ServerThread(server.port)
        try:
            assert client.call("BU", BU_ZPK).fields == BU_ZPK_KCV  # one reconnect, invisible to the caller
        finally:
            again.stop()
    finally:
        client.close()


def test_tcp_hsm_server_gone_mid_session_is_unavailable(server: ServerThread) -> None:
    client = TcpHsm(server.host, server.port)
    assert client.call("NC", "").ok
    server.stop()
    with pytest.raises(HsmUnavailable, match=f"127.0.0.1:{server.port}"):
        client.call("NC", "")
    client.close()


def test_tcp_hsm_closed_port_names_the_address() -> None:
    port = free_port()
    client = TcpHsm("127.0.0.1", port, timeout=2)
    with pytest.raises(HsmUnavailable, match=f"127.0.0.1:{port}.*cannot connect"):
        client.call("NC", "")


def test_tcp_hsm_times_out_when_nothing_answers() -> None:
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never reads
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = TcpHsm("127.0.0.1", port, timeout=0.3)
        with pytest.raises(HsmUnavailable, match=f"127.0.0.1:{port}: no reply within 0.3s"):
            client.call("NC", "")
        client.close()


def _one_reply_peer(reply: bytes) -> tuple[int, threading.Thread]:
    """A TCP peer that reads one frame and answers with `reply`: an HSM that misbehaves."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            size = int.from_bytes(conn.recv(2), "big")
            received = b""
            while len(received) < size:
                received += conn.recv(size - len(received))
            conn.sendall(len(reply).to_bytes(2, "big") + reply)
            conn.recv(1)  # until the client hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"9999ND00", "header does not echo"),  # the client's first header is 0001
        (b"0001NE00", "response code 'NE' does not answer command NC"),
        (b"0001ND", "too short"),
        (b"0001NDxx", "error code"),
    ],
)
def test_tcp_hsm_rejects_replies_that_do_not_answer_the_request(reply: bytes, message: str) -> None:
    port, thread = _one_reply_peer(reply)
    client = TcpHsm("127.0.0.1", port)
    with pytest.raises(HsmUnavailable, match=message):
        client.call("NC", "")
    assert client._sock is None  # out of step: the connection is dropped
    client.close()
    thread.join(timeout=10)


# ---- the HSM front in its own process ------------------------------------------------


def test_hsm_serve_answers_nc_and_dc_from_a_separate_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "possim.cli", "hsm", "serve", "--listen", "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        client = connect_hsm(ready["listening"])
        try:
            nc = client.call("NC", "")
            assert nc.ok and nc.fields[:16] == ready["lmk_check"] == LMK_CHECK
            assert client.call("DC", dc_fields("4524")) == HsmReply("DD", "00", "")
            assert client.call("DC", dc_fields("4523")) == HsmReply("DD", "01", "")
        finally:
            client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
