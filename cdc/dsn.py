"""Connection strings: parse and validate them, add secrets, and show them without secrets."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr
from psycopg import ProgrammingError


class DsnError(ValueError):
    """A DSN that cannot be parsed; the message never contains the DSN itself."""


def connect_kwargs(dsn: str, password: SecretStr | None = None, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` (or ``make_conninfo``) from a DSN."""
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise DsnError("the DSN is not a valid libpq connection string or postgresql:// URI") from None
    if password is not None:
        params["password"] = password.get_secret_value()
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "cdc")
    params.update(extra)
    return params


def conninfo(dsn: str, password: SecretStr | None = None, **extra: Any) -> str:
    return make_conninfo(**connect_kwargs(dsn, password, **extra))


def redact_dsn(dsn: str) -> str:
    """The DSN as host:port/dbname user=..., with no password, for logs and messages."""
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return "<unparsable DSN>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    text = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
    if params.get("user"):
        text = f"{params['user']}@{text}"
    return text
