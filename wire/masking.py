"""Masking card numbers for display: what every log, trace and report shows of a PAN or a payment code."""

from __future__ import annotations


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest as '*' (short numbers show at most their last 4)."""
    if len(pan) <= 10:
        return "*" * max(len(pan) - 4, 0) + pan[-4:] if len(pan) > 4 else "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
