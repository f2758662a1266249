"""Logging: JSON lines on stdout (journald keeps them), or plain text for a terminal.

Extra fields given as ``log.info("...", extra={"source": "crm", "position": "0/1"})``
become keys of the JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        text = f"{time.strftime('%H:%M:%S')} {record.levelname.lower():7} {record.getMessage()}"
        return f"{text} [{extras}]" if extras else text


def one_line(message: object) -> str:
    """An error message on one line (drivers' messages span several), for logs and exit messages."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return " ".join(str(message).split()) if message is not None else "failed"


def setup_logging(level: str = "info", fmt: str = "json", stream=None) -> None:
    """Log lines to ``stream`` (default: stdout, for journald)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("psycopg").setLevel(logging.ERROR)  # its notes on failed pipelines repeat our errors
