"""Models: ONNX uploads, stored once by sha256."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from db import uploads
from service.deps import CurrentToken, PathId, SessionDep, SettingsDep, UserToken, pause_transaction
from common.errors import BadInput, TooLarge
from common.shapes import parse_shapes
from common.protocol import MAX_ID, ModelPublic

router = APIRouter(prefix="/models", tags=["models"])


def _parse_shapes(text: str | None) -> dict[str, list[int]] | None:
    """The ``input_shapes`` form field (JSON, or ``x=1,3,32,32`` items); BadInput says what is wrong."""
    return parse_shapes(text, what="input_shapes")


@router.post("", status_code=201, responses={200: {"model": ModelPublic, "description": "Same bytes already stored"}})
def upload_model(
    file: Annotated[UploadFile, File(description="The ONNX file.")],
    session: SessionDep,
    settings: SettingsDep,
    token: UserToken,
    response: Response,
    name: Annotated[str | None, Form(max_length=200)] = None,
    input_shapes: Annotated[
        str | None, Form(max_length=100_000, description='JSON, e.g. {"x": [1, 3, 32, 32]}')
    ] = None,
) -> ModelPublic:
    """201 with the new model, or 200 (``created: false``) when these bytes are stored already."""
    from tuner.intake import inspect_onnx  # onnx is heavy; imported on first upload

    limit = int(settings.max_model_mb * 1024 * 1024)
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise TooLarge(f"the model is over the {settings.max_model_mb:g} MiB limit (TUNEHUB_MAX_MODEL_MB)")
    if not content:
        raise BadInput(f"the uploaded file {file.filename or ''!r} is empty")
    shapes = _parse_shapes(input_shapes)
    pause_transaction(session)
    inputs = inspect_onnx(content, shapes)  # BadInput with the parser's reason
    model, created = uploads.store_model(
        session, name=name or file.filename or "model.onnx", content=content, input_shapes=inputs.shapes,
        owner_token_id=token.id,
    )
    if not created:
        response.status_code = 200
    return model


@router.get("")
def list_models(
    session: SessionDep,
    _: CurrentToken,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[ModelPublic]:
    """Newest first."""
    return uploads.list_models(session, limit=limit, offset=offset)


@router.get("/{model_id}")
def get_model(model_id: PathId, session: SessionDep, _: CurrentToken) -> ModelPublic:
    return uploads.get_model(session, model_id=model_id)
