"""Logging set-up shared by every tunehub process: one line per event, to stderr.

``TUNEHUB_LOG_FORMAT=json`` makes each line a JSON object (``ts``, ``level``,
``logger``, ``msg``, plus ``exc`` with the traceback when there is one), for log
collectors that index fields; the default is plain text for people.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; anything passed in ``extra=`` that is JSON-able rides along."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str | None = None, *, fmt: str | None = None) -> None:
    """Configure the root logger from arguments, else ``TUNEHUB_LOG_LEVEL`` / ``TUNEHUB_LOG_FORMAT``."""
    level = (level or os.environ.get("TUNEHUB_LOG_LEVEL") or "INFO").upper()
    fmt = (fmt or os.environ.get("TUNEHUB_LOG_FORMAT") or "text").lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"TUNEHUB_LOG_FORMAT={fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])
    # TVM and uvicorn are chatty at INFO; keep their warnings.
    for name in ("uvicorn.access", "httpx", "xgboost"):
        logging.getLogger(name).setLevel(logging.WARNING)
