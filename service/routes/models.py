"""Models: ONNX uploads, stored once by sha256.

An upload is untrusted: it is checked in the limited intake process
(``tuner.intake_sandbox``) and stored only when every check passes, so a
refused upload leaves nothing behind to block a corrected one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from db import uploads
from service.deps import CurrentToken, PathId, SessionDep, SettingsDep, UserToken, pause_transaction
from common.errors import BadInput, TooLarge
from common.shapes import check_bounds, parse_shapes
from common.protocol import MAX_ID, ModelPublic

router = APIRouter(prefix="/models", tags=["models"])


def _parse_shapes(text: str | None, max_dim: int, max_elements: int) -> dict[str, list[int]] | None:
    """The ``input_shapes`` form field (JSON, or ``x=1,3,32,32`` items), bounded; BadInput says what is wrong."""
    shapes = parse_shapes(text, what="input_shapes")
    if shapes:
        check_bounds(shapes, max_dim=max_dim, max_elements=max_elements, what="input_shapes")
    return shapes


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
    from tuner.intake_sandbox import inspect_in_sandbox

    limit = int(settings.max_model_mb * 1024 * 1024)
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise TooLarge(f"the model is over the {settings.max_model_mb:g} MiB limit (TUNEHUB_MAX_MODEL_MB)")
    if not content:
        raise BadInput(f"the uploaded file {file.filename or ''!r} is empty")
    shapes = _parse_shapes(input_shapes, settings.intake_max_dim, settings.intake_max_tensor_elements)
    pause_transaction(session)
    inputs = inspect_in_sandbox(content, shapes, settings)  # BadInput with the reason, TooLarge over a limit
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
