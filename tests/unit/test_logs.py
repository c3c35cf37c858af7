"""Structured logs: one JSON object a line, with the event's ids, and secrets redacted."""

from __future__ import annotations

import io
import json
import logging

from adapters.nats.event_log import log_context
from adapters.runtime.logs import JsonFormatter, RedactingFilter, register_secrets
from domain.events import ScanRequested, SessionStartRequested
from tests.builders import make


def test_json_lines_carry_correlation_and_causation_ids_and_hide_secrets() -> None:
    cause = make(SessionStartRequested, "cause", requested_by="t")
    event = ScanRequested.caused_by(cause, 0, "session", session_id="s", scan_number=1)
    register_secrets(["sup3r-s3cret-value"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.structured")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("login with sup3r-s3cret-value and key PKABCDEFGHIJKLMNOPQR failed",
                    extra=log_context(event, "scanner"))
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["event_id"] == str(event.event_id)
    assert line["causation_id"] == str(cause.event_id)
    assert line["correlation_id"] == cause.correlation_id
    assert line["handler"] == "scanner" and line["event_type"] == "ScanRequested"
    assert "sup3r-s3cret-value" not in line["msg"] and "PKABCDEF" not in line["msg"]
    assert line["msg"].count("********") == 2
