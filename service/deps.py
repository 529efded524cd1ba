"""Request dependencies as ``Annotated`` aliases: the session, the caller's token, role checks.

``SessionDep`` is one session per request with ``session_scope`` semantics:
commit when the endpoint returns, roll back when it raises, always close. Its
exit runs before the response is sent (``scope="function"``), so a client
never sees a 2xx for a write that then failed to commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from db import tokens, workers
from db.engine import session_scope
from db.records import WorkerRecord
from common.errors import Forbidden, Unauthorized
from common.protocol import MAX_ID, Role
from common.settings import Settings


async def get_settings(request: Request) -> Settings:
    # async: a plain attribute read needs no trip through the thread pool.
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with session_scope(factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A tunehub token: `Authorization: Bearer <token>`.")


PathId = Annotated[int, Path(ge=1, le=MAX_ID, description="A row id, 1..2**63-1.")]
"""An id in the URL path: out of range is a 422, never a database overflow."""


@dataclass(frozen=True)
class AuthToken:
    """The caller, as far as authorization cares (the name goes into the audit log)."""

    id: int
    role: Role
    name: str = ""


def current_token(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AuthToken:
    token = authenticate(session, credentials.credentials if credentials is not None else None)
    request.state.token = token  # service.audit names the caller of every write
    return token


def authenticate(session: Session, raw: str | None) -> AuthToken:
    """The live token a raw string names (a Bearer header, the dashboard's cookie); Unauthorized otherwise."""
    if not raw:
        raise Unauthorized("missing token: send the header 'Authorization: Bearer <token>'")
    found = tokens.live_token(session, raw=raw)
    if found is None:
        raise Unauthorized("unknown or revoked token")
    return AuthToken(id=found.id, role=found.role, name=found.name)


CurrentToken = Annotated[AuthToken, Depends(current_token)]


def require_roles(*roles: Role) -> Callable[[AuthToken], AuthToken]:
    allowed = ", ".join(r.value for r in roles)

    async def check(token: CurrentToken) -> AuthToken:  # no I/O: runs on the loop, no thread hop
        if token.role not in roles:
            raise Forbidden(f"this needs a token with role {allowed}; yours is {token.role.value}")
        return token

    return check


AdminToken = Annotated[AuthToken, Depends(require_roles(Role.admin))]
UserToken = Annotated[AuthToken, Depends(require_roles(Role.admin, Role.user))]
WorkerToken = Annotated[AuthToken, Depends(require_roles(Role.admin, Role.worker))]


def owned_worker(session: Session, token: AuthToken, worker_id: int) -> WorkerRecord:
    """The worker, if the caller registered it (or is admin): one token cannot drive another's worker."""
    worker = workers.get_worker(session, worker_id=worker_id)
    if token.role is not Role.admin and worker.token_id != token.id:
        raise Forbidden(f"worker {worker_id} was registered with another token")
    return worker


def pause_transaction(session: Session) -> None:
    """End the request's transaction before seconds of CPU work (parsing, TVM).

    On SQLite every transaction takes the write lock at BEGIN (``db.engine``),
    so holding one through model intake would stall every worker's lease. What
    was read stays usable (``expire_on_commit=False``); the next query begins
    a fresh transaction, which ``SessionDep`` commits or rolls back as usual.
    """
    session.commit()
