"""Named API keys in SQL: made with a random secret shown once (only its SHA-256 is kept), found by that hash,
listed, revoked."""
import hashlib
import secrets
from datetime import datetime
from typing import List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import ApiKey, utcnow

__all__ = ['create_key', 'find_key', 'list_keys', 'get_key', 'revoke_key', 'secret_hash', 'KEY_PREFIX']

KEY_PREFIX = 'amg_'  # named keys start with it: told apart from the environment's keys at a glance


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(*, session: Session, name: str, role: str, sites: Sequence[str] = (),
               expires_at: Optional[datetime] = None) -> Tuple[ApiKey, str]:
    """A new key and its secret (shown once: only its hash is stored)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, role=role, sites=sorted(set(sites)), secret_sha256=secret_hash(secret),
                 expires_at=expires_at)
    session.add(key)
    session.flush()
    return key, secret


def find_key(*, session: Session, secret: str) -> Optional[ApiKey]:
    """The key of this secret, revoked or expired ones included (the caller says why it is refused)."""
    return session.scalars(select(ApiKey).where(ApiKey.secret_sha256 == secret_hash(secret))).first()


def list_keys(*, session: Session) -> List[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def get_key(*, session: Session, key_id: int) -> Optional[ApiKey]:
    return session.get(ApiKey, key_id)


def revoke_key(*, session: Session, key_id: int) -> Optional[ApiKey]:
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
    return key
