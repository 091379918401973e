"""TDES ECB keeps one OpenSSL context per key and thread (hsm_mock/cipher.py): reused contexts must give
exactly what fresh ones give, call after call, in any order, on any thread."""

from __future__ import annotations

import threading

from possim.hsm_mock.cipher import tdes_ecb_decrypt, tdes_ecb_encrypt

H = bytes.fromhex
CLASSIC = H("0123456789ABCDEFFEDCBA9876543210")
ZERO_BLOCK_UNDER_CLASSIC = H("08D7B4FB629D0885")
"""The published check value computation: eight zero bytes under the classic test key (KCV 08D7B4)."""


def test_repeated_and_interleaved_calls_keep_giving_the_published_block():
    data = bytes(range(8 * 5))
    for _ in range(3):
        assert tdes_ecb_encrypt(CLASSIC, bytes(8)) == ZERO_BLOCK_UNDER_CLASSIC
        cryptogram = tdes_ecb_encrypt(CLASSIC, data)
        # ECB: each block on its own gives the same bytes; nothing is held back for a later call.
        assert cryptogram == b"".join(tdes_ecb_encrypt(CLASSIC, data[i : i + 8]) for i in range(0, len(data), 8))
        assert tdes_ecb_decrypt(CLASSIC, cryptogram) == data
        assert tdes_ecb_decrypt(CLASSIC, ZERO_BLOCK_UNDER_CLASSIC) == bytes(8)


def test_threads_each_get_the_right_answer():
    wrong: list[str] = []

    def work(name: str) -> None:
        for _ in range(500):
            if tdes_ecb_encrypt(CLASSIC, bytes(8)) != ZERO_BLOCK_UNDER_CLASSIC:
                wrong.append(f"{name}: encrypt")
            if tdes_ecb_decrypt(CLASSIC, ZERO_BLOCK_UNDER_CLASSIC * 2) != bytes(16):
                wrong.append(f"{name}: decrypt")

    threads = [threading.Thread(target=work, args=(f"thread {n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
