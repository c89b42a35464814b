"""Secrets at rest (provider keys, tool secrets, webhook signing secrets): MultiFernet over
FIELD_ENCRYPTION_KEYS (comma-separated; the first key encrypts, every key decrypts).

Rotation: put the new key first, keep the old ones after it, then run `rotate_secrets` (re-encrypts every
stored token with the first key, through the re-encrypters the apps register here); finally drop the old keys.
Production refuses to start without the setting (config/settings/prod.py); elsewhere a development key is
derived from SECRET_KEY, so secrets still never sit in the database in clear text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from .errors import DomainError, ErrorCode


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


# --- Rotation: each app re-encrypts its own stored secrets --------------------------------------------

_rotators: dict[str, Callable[[], int]] = {}


def register_secret_rotation(name: str, rotate: Callable[[], int]) -> None:
    """`rotate()` re-encrypts the current tenant's secrets of one app with the first key and returns how many;
    apps register it in AppConfig.ready()."""
    _rotators[name] = rotate


def secrets_rotate_all() -> dict[str, int]:
    """Re-encrypt every registered kind of secret of the current tenant: {app name: secrets re-encrypted}."""
    return {name: rotate() for name, rotate in sorted(_rotators.items())}
