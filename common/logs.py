"""Logging set-up shared by every tunehub process: one line per event, to stderr."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("TUNEHUB_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # TVM and uvicorn are chatty at INFO; keep their warnings.
    for name in ("uvicorn.access", "httpx", "xgboost"):
        logging.getLogger(name).setLevel(logging.WARNING)
