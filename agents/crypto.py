"""Secrets at rest: MultiFernet over FIELD_ENCRYPTION_KEYS (comma-separated; the first key encrypts).

Rotation: put the new key first, keep the old ones after it, then run `rotate_secrets` (re-encrypts every
stored token with the first key); finally drop the old keys. Without the setting a development key is derived
from SECRET_KEY, so secrets still never sit in the database in clear text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from core.errors import DomainError, ErrorCode


class SecretUnreadable(DomainError):
    code = ErrorCode.SECRET_UNREADABLE
    status = 500


def _keys() -> list[str]:
    configured = [k.strip() for k in getattr(settings, "FIELD_ENCRYPTION_KEYS", []) if k.strip()]
    if configured:
        return configured
    derived = hashlib.sha256(("agentry-field-encryption:" + settings.SECRET_KEY).encode()).digest()
    return [base64.urlsafe_b64encode(derived).decode()]


@functools.lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet_for(tuple(_keys()))


def encrypt_str(value: str) -> str:
    if not value:
        return ""
    return fernet().encrypt(value.encode()).decode()


def decrypt_str(token: str) -> str:
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("A stored secret cannot be decrypted with the configured keys.") from exc


def encrypt_json(value: dict[str, Any]) -> str:
    return encrypt_str(json.dumps(value)) if value else ""


def decrypt_json(token: str) -> dict[str, Any]:
    return json.loads(decrypt_str(token)) if token else {}


def rotate_token(token: str) -> str:
    """Re-encrypt with the current (first) key."""
    return fernet().rotate(token.encode()).decode() if token else ""
