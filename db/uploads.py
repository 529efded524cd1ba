"""Uploaded model files: stored once by sha256, listed without their bytes.

Functions are keyword-only, take the caller's session and never commit.
Storing the same bytes twice is idempotent (the unique sha256 decides).
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from common.errors import BadInput, Conflict, NotFound
from common.protocol import ModelPublic
from db.engine import as_utc, db_now
from db.models import Model
from db.records import ModelFile


def store_model(
    session: Session,
    *,
    name: str,
    content: bytes,
    input_shapes: dict[str, list[int]],
    owner_token_id: int | None = None,
) -> tuple[ModelPublic, bool]:
    """Store model bytes once by sha256; returns (its wire view, created).

    Uploading the same bytes again returns the stored model (created=False), so
    re-running a script does not fill the database. The same bytes with other
    input shapes are a Conflict: the shapes decide the workloads, and silently
    answering with the old ones would tune the wrong thing.
    """
    if not content:
        raise BadInput("the model file is empty")
    digest = hashlib.sha256(content).hexdigest()
    shapes_json = json.dumps(input_shapes, sort_keys=True)
    existing = _model_by_sha(session, digest)
    if existing is None:
        row = Model(
            name=name[:200],
            sha256=digest,
            format="onnx",
            content=content,
            size_bytes=len(content),
            input_shapes_json=shapes_json,
            owner_token_id=owner_token_id,
            created_at=db_now(session),
        )
        try:
            with session.begin_nested():
                session.add(row)
            return _public(row, created=True), True
        except IntegrityError:  # another request stored the same bytes just now
            existing = _model_by_sha(session, digest)
            assert existing is not None
    if json.loads(existing.input_shapes_json) != json.loads(shapes_json):
        raise Conflict(
            f"these bytes are already stored as model {existing.id} with input shapes "
            f"{existing.input_shapes_json}, not {shapes_json}; use that model, or upload a copy "
            f"with the batch dimension fixed"
        )
    return _public(existing, created=False), False


def _model_by_sha(session: Session, digest: str) -> Model | None:
    return session.scalars(select(Model).where(Model.sha256 == digest)).one_or_none()


def get_model(session: Session, *, model_id: int) -> ModelPublic:
    """The model's wire view, without loading its bytes; NotFound names the id."""
    row = session.get(Model, model_id, options=[defer(Model.content)])
    if row is None:
        raise NotFound(f"model {model_id} does not exist")
    return _public(row)


def model_file(session: Session, *, model_id: int) -> ModelFile:
    """The model's bytes and stored input shapes; NotFound names the id."""
    row = session.get(Model, model_id)
    if row is None:
        raise NotFound(f"model {model_id} does not exist")
    return ModelFile(id=row.id, content=row.content, input_shapes=json.loads(row.input_shapes_json))


def list_models(session: Session, *, limit: int = 100, offset: int = 0) -> list[ModelPublic]:
    """Newest first, without loading the bytes (models can be hundreds of MB)."""
    rows = session.scalars(
        select(Model).options(defer(Model.content)).order_by(Model.id.desc()).limit(limit).offset(offset)
    )
    return [_public(r) for r in rows]


def _public(row: Model, *, created: bool = False) -> ModelPublic:
    """The wire view; ``created`` is True only in the answer to the upload that stored it."""
    return ModelPublic(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        input_shapes=json.loads(row.input_shapes_json),
        created_at=as_utc(row.created_at),
        created=created,
    )

