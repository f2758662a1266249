"""Connection strings: parse and validate them, add secrets, and show them without secrets."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from cdc.errors import DsnError


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
    """The DSN as user@host:port/dbname, with no password, for logs and messages."""
    if dsn.startswith(("mysql://", "mariadb://")):
        return redact_mysql_dsn(dsn)
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


def mysql_params(dsn: str, password: SecretStr | None = None) -> dict[str, Any]:
    """pymysql keyword arguments from ``mysql://user[:password]@host[:port]/database``."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError:
        raise DsnError("the DSN is not a valid mysql://user@host:port/database URI") from None
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
        raise DsnError("the DSN must look like mysql://user@host:port/database")
    params: dict[str, Any] = {
        "host": parts.hostname,
        "port": port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }
    database = unquote(parts.path.lstrip("/"))
    if database:
        params["database"] = database
    if password is not None:
        params["password"] = password.get_secret_value()
    return params


def redact_mysql_dsn(dsn: str) -> str:
    try:
        parts = urlsplit(dsn)
        text = f"{parts.hostname}:{parts.port or 3306}{parts.path}"
    except ValueError:
        return "<unparsable DSN>"
    return f"{unquote(parts.username)}@{text}" if parts.username else text
