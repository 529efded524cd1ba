"""API tokens: minted random, stored only as their sha256, verified on every request, revoked at once.

Functions are keyword-only, take the caller's session and never commit. The
admin bootstrap (``ensure_token``) is idempotent: replicas starting together
race on the unique hash, and the loser reads the winner's row.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import NotFound
from common.protocol import Role
from db.engine import db_now
from db.models import Token
from db.records import TokenRecord


def hash_token(raw: str) -> str:
    """The sha256 hex of a raw token: the only form a token is stored in.

    Tokens are 32 random bytes (``secrets.token_urlsafe(32)``), so a plain fast
    hash is enough: there is no dictionary to guess from, and no salt or slow
    KDF would add anything but latency to every request. Operator-chosen admin
    tokens (``TUNEHUB_ADMIN_TOKEN``) should be just as random.
    """
    return hashlib.sha256(raw.encode()).hexdigest()


def _record(row: Token) -> TokenRecord:
    return TokenRecord(id=row.id, name=row.name, role=Role(row.role))


def create_token(session: Session, *, name: str, role: Role) -> tuple[TokenRecord, str]:
    """A new random token; returns (record, raw). The raw token exists only in the return value."""
    raw = secrets.token_urlsafe(32)
    row = Token(name=name, role=Role(role).value, token_hash=hash_token(raw), created_at=db_now(session))
    session.add(row)
    session.flush()
    return _record(row), raw


def ensure_token(session: Session, *, raw: str, name: str, role: Role) -> TokenRecord:
    """Store a known raw token once (the admin bootstrap); later calls return the same row.

    Several replicas starting at once race on the unique hash; the loser reads
    the winner's row. A revoked token stays revoked: an operator who revoked
    it meant it.
    """
    digest = hash_token(raw)
    existing = session.scalars(select(Token).where(Token.token_hash == digest)).one_or_none()
    if existing is not None:
        return _record(existing)
    row = Token(name=name, role=Role(role).value, token_hash=digest, created_at=db_now(session))
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return _record(session.scalars(select(Token).where(Token.token_hash == digest)).one())
    return _record(row)


# Every request runs it: built once, so its cache key is computed once (see db/queue.py).
_LIVE_TOKEN = select(Token.__table__.c.id, Token.__table__.c.role, Token.__table__.c.name).where(
    Token.__table__.c.token_hash == bindparam("digest"), Token.__table__.c.revoked_at.is_(None)
)


def verify_token(session: Session, *, raw: str) -> tuple[int, Role] | None:
    """(token id, role) for a live token; None for an unknown or revoked one."""
    row = session.execute(_LIVE_TOKEN, {"digest": hash_token(raw)}).one_or_none()
    return None if row is None else (row.id, Role(row.role))


def live_token(session: Session, *, raw: str) -> TokenRecord | None:
    """The live token's record (id, name, role); None for an unknown or revoked one."""
    row = session.execute(_LIVE_TOKEN, {"digest": hash_token(raw)}).one_or_none()
    return None if row is None else TokenRecord(id=row.id, name=row.name, role=Role(row.role))


def revoke_token(session: Session, *, token_id: int) -> None:
    """Revoke a token at once: every later request with it is 401. Revoking twice is a no-op."""
    if session.get(Token, token_id) is None:
        raise NotFound(f"token {token_id} does not exist")
    session.execute(
        update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=db_now(session))
    )

