"""TUNEHUB_LOG_FORMAT=json: one JSON object per line, with the traceback and ``extra`` fields when given."""

from __future__ import annotations

import json
import logging

import pytest

from common.logs import JsonFormatter, setup_logging


def test_json_lines_carry_fields_extra_and_traceback() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("tunehub.x", logging.WARNING, __file__, 1, "lease %d lost", (7,), None)
    record.worker_id = 3  # what a caller passes as extra={"worker_id": 3}
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "tunehub.x" and entry["msg"] == "lease 7 lost"
    assert entry["worker_id"] == 3 and entry["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(formatter.format(record))
    assert "ValueError: boom" in entry["exc"] and "\n" not in formatter.format(record)


def test_an_unknown_format_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="text, json"):
        setup_logging(fmt="xml")
