"""Connection strings: parse and validate them, add secrets, and show them without secrets.

PostgreSQL and MySQL URIs (``postgresql://``, ``mysql://``) follow one rule for their
user-info: it ends at the last ``@`` before the host, so an unencoded ``@`` or ``:`` in a
password is read as part of it. A ``/``, ``?`` or ``#`` in a user name or password must be
percent-encoded (``%2F``, ``%3F``, ``%23``): left as it is, it would end the host and turn
the password into a host, port or database name. A URI with an ``@`` after such a character
is refused with an error that never repeats the DSN (an ``@`` in the database name or in
the options is written ``%40``). libpq's ``key=value`` form is read by libpq as it is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from cdc.errors import DsnError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
MYSQL_SCHEMES = ("mysql://", "mariadb://")
UNENCODED = (
    "the DSN has an '@' after a '/', '?' or '#': percent-encode these characters in its user name and"
    " password ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40, '%' as %25) or give the password"
    " in the 'password' setting"
)


def split_user_info(uri: str) -> tuple[str, str | None, str | None, str]:
    """``(scheme, user, password, rest)`` of ``scheme://[user[:password]@]rest``, decoded."""
    scheme, _, rest = uri.partition("://")
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[authority_end:]:
        raise DsnError(UNENCODED)
    user_info, at, host = rest[:authority_end].rpartition("@")
    if not at:
        return scheme, None, None, rest
    user, colon, password = user_info.partition(":")
    return scheme, unquote(user), unquote(password) if colon else None, host + rest[authority_end:]


def _postgres_params(dsn: str) -> dict[str, Any]:
    user = password = None
    if dsn.startswith(POSTGRES_SCHEMES):
        scheme, user, password, rest = split_user_info(dsn)
        dsn = f"{scheme}://{rest}"
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise DsnError("the DSN is not a valid libpq connection string or postgresql:// URI") from None
    if user:  # as in libpq, a "?user=" or "?password=" parameter wins over the user-info
        params.setdefault("user", user)
    if password is not None:
        params.setdefault("password", password)
    return params


def connect_kwargs(dsn: str, password: SecretStr | None = None, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` (or ``make_conninfo``) from a DSN."""
    params = _postgres_params(dsn)
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
    try:
        if dsn.startswith(MYSQL_SCHEMES):
            params = mysql_params(dsn)
            text = f"{params['host']}:{params['port']}" + (f"/{params['database']}" if "database" in params else "")
        else:
            params = _postgres_params(dsn)
            host = params.get("host") or params.get("hostaddr") or "localhost"
            text = f"{host}:{params.get('port') or '5432'}/{params.get('dbname') or params.get('user') or ''}"
    except DsnError:
        return "<unparsable DSN>"
    return f"{params['user']}@{text}" if params.get("user") else text


def mysql_params(dsn: str, password: SecretStr | None = None) -> dict[str, Any]:
    """pymysql keyword arguments from ``mysql://user[:password]@host[:port]/database``."""
    if not dsn.startswith(MYSQL_SCHEMES):
        raise DsnError("the DSN must look like mysql://user@host:port/database")
    _, user, dsn_password, rest = split_user_info(dsn)
    try:
        parts = urlsplit(f"//{rest}")
        port = parts.port or 3306
    except ValueError:
        raise DsnError("the DSN is not a valid mysql://user@host:port/database URI") from None
    if not parts.hostname:
        raise DsnError("the DSN must look like mysql://user@host:port/database")
    params: dict[str, Any] = {
        "host": parts.hostname,
        "port": port,
        "user": user or "",
        "password": dsn_password or "",
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }
    database = unquote(parts.path.lstrip("/"))
    if database:
        params["database"] = database
    if password is not None:
        params["password"] = password.get_secret_value()
    return params
