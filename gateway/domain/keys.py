"""API keys: their format, hashing and comparison. Pure: no I/O.

A key reads ``lk_<key_id>_<secret>``. The key id finds the row; only the SHA-256 of the secret
is stored (the secret is 32 random bytes, so a fast hash is enough: there is nothing to guess
by brute force), and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCOPES = ("member", "admin")
PREFIX = "lk"


@dataclass(frozen=True)
class NewKey:
    key_id: str
    key: str
    secret_sha256: str


def new_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{PREFIX}_{key_id}_{secret}", hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """(key_id, secret), or None when the text is not shaped like a key."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_sha256)


def scope_allows(scope: str, needed: str) -> bool:
    """An admin key may also call the member API (support staff look members up)."""
    return scope == needed or scope == "admin"
