"""API keys: random secrets shown once, stored only as their SHA-256.

A key is ``rs_`` followed by 43 URL-safe characters (256 random bits), so a
plain SHA-256 is enough to store it: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from sqlalchemy import select

from reelscope.errors import AuthError, ConfigError, NotFoundError
from reelscope.store.schema import ApiKeyRow
from reelscope.store.store import Store

KEY_PREFIX = "rs_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    webhook_url: str
    revoked: bool


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # the only time the full key exists outside its holder


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_webhook_url(url: str) -> str:
    if not url:
        return ""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"webhook URL must be http(s)://host/..., got {url!r}")
    return url


class ApiKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, webhook_url: str = "") -> NewKey:
        name = name.strip()
        if not name or len(name) > 100:
            raise ConfigError("a key name must be 1 to 100 characters")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            name=name,
            prefix=secret[:10],
            key_hash=hash_key(secret),
            webhook_url=check_webhook_url(webhook_url),
            revoked=False,
            created_at=time.time(),
        )
        with self.store.session() as s:
            s.add(row)
            s.flush()
            return NewKey(_key(row), secret)

    def authenticate(self, secret: str | None) -> ApiKey:
        """The key whose secret this is; AuthError when missing, unknown or revoked."""
        if not secret:
            raise AuthError("missing API key: send 'Authorization: Bearer KEY'")
        with self.store.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(secret)))
            if row is None:
                raise AuthError("invalid API key")
            if row.revoked:
                raise AuthError("this API key has been revoked")
            return _key(row)

    def list(self) -> list[ApiKey]:
        with self.store.session() as s:
            return [_key(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))]

    def update(
        self, key_id: int, *, webhook_url: str | None = None, revoke: bool = False
    ) -> ApiKey:
        with self.store.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFoundError(f"no API key with id {key_id}")
            if webhook_url is not None:
                row.webhook_url = check_webhook_url(webhook_url)
            if revoke:
                row.revoked = True
            return _key(row)


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.name, row.prefix, row.webhook_url, row.revoked)
