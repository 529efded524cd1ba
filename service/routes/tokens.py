"""Tokens: admins mint them (shown once) and revoke them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from db import tokens
from service.deps import AdminToken, PathId, SessionDep
from common.protocol import TokenCreate, TokenCreated

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=201)
def create_token(body: TokenCreate, session: SessionDep, _: AdminToken) -> TokenCreated:
    token, raw = tokens.create_token(session, name=body.name, role=body.role)
    return TokenCreated(id=token.id, name=token.name, role=token.role, token=raw)


@router.delete("/{token_id}", status_code=204)
def revoke_token(token_id: PathId, session: SessionDep, _: AdminToken) -> Response:
    tokens.revoke_token(session, token_id=token_id)
    return Response(status_code=204)
