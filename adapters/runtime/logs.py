"""Logging: readable text by default, one JSON object per line with `--log-format json`.

Secrets are redacted from every record, whatever logged them: values of the configured
secrets are replaced, and so is anything that looks like an Alpaca key.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

_KEY_LIKE = re.compile(r"\b(?:PK|AK|CK)[A-Z0-9]{14,}\b")
_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for s in _secrets:
        text = text.replace(s, "********")
    return _KEY_LIKE.sub("********", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg, record.args = redact(msg), None
        return True


class JsonFormatter(logging.Formatter):
    FIELDS = ("event_id", "event_type", "correlation_id", "causation_id", "handler")

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for f in self.FIELDS:
            v = getattr(record, f, None)
            if v is not None:
                out[f] = str(v)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # nats-py logs every reconnect attempt at ERROR; ours say it once, in words.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
