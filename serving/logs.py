"""Structured logs for the service: one JSON object per line on stderr.

What is logged is chosen at each call site to carry job ids, tenant ids, codes and timings,
never patient names, IDs or study UIDs (law 09-08); the audit log, not the application log, is
where access to a study is recorded.

Call sites are not the only writers, though: libraries log at INFO with the UIDs of the objects
they build (highdicom), and exception messages quote what they failed on. The service's handler
therefore replaces anything shaped like a DICOM UID with ``<uid>`` in every message and
traceback, keeping only the standard's own UIDs (``1.2.840.10008.…``: transfer syntaxes and SOP
classes, which identify no patient and help diagnose a refusal).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["JsonFormatter", "RedactUIDs", "configure_logging", "make_handler", "redact_uids"]

#: Dotted numeric strings starting 0, 1 or 2 with no leading zeros, as DICOM UIDs are.
_UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9][0-9]*)){2,}(?!\.?\w)")
#: The DICOM standard's own UIDs (transfer syntaxes, SOP classes) are kept.
_STANDARD_ROOT = "1.2.840.10008."
#: Shorter dotted numbers are versions and addresses (``0.1.0``, ``1.2.3.4``), not UIDs.
_MIN_UID_CHARS = 10


def redact_uids(text: str) -> str:
    """``text`` with every DICOM UID but the standard's own replaced by ``<uid>``."""

    def replace(match: re.Match[str]) -> str:
        uid = match.group(0)
        keep = uid.startswith(_STANDARD_ROOT) or len(uid) < _MIN_UID_CHARS
        return uid if keep else "<uid>"

    return _UID.sub(replace, text)


class RedactUIDs(logging.Filter):
    """Redact UIDs from a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_uids(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_uids(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:  # already formatted (and redacted) by RedactUIDs
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def make_handler(stream: TextIO | None = None) -> logging.Handler:
    """The service's log handler: JSON lines on ``stream`` (stderr), UIDs redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactUIDs())
    return handler


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler()]
    root.setLevel(level)
    # highdicom narrates every object it builds at INFO (one line per copied module).
    logging.getLogger("highdicom").setLevel(max(level, logging.WARNING))
