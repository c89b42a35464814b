"""HMAC-SHA256 signatures of webhook deliveries (documented for receivers in docs/webhooks.md).

Header:  Agentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Agentry-Signature"
TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: int = TOLERANCE_SECONDS, now: float | None = None
) -> bool:
    """What a receiver does: parse, recompute, compare in constant time, refuse stale timestamps (replays)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
