"""Configuration: the TOML file the README describes, overridable by ``CDC_...`` environment variables.

Nested keys use ``__`` (``CDC_CONFLICTS__WINDOW_SECONDS=60``); items of the ``sources``
and ``targets`` lists are addressed by name or index (``CDC_SOURCES__CRM__DSN=...``).
Secrets (``password``) come from the file, the environment, or ``secrets_dir`` (a file
named ``sources.crm.password``, as systemd's ``LoadCredential`` provides). They are
``SecretStr`` and never printed; a DSN is shown only with its password removed.

``load_settings`` raises ``ConfigError`` whose text is one line naming the key and the
problem.

Why this module is long: it is the whole configuration schema, one pydantic model per section
with its validation, kept on one page so that every key can be read beside its rules.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cdc.errors import ConfigError

DEFAULT_CONFIG = "/etc/cdc/cdc.toml"
ENV_PREFIX = "CDC_"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
_QUALIFIED = re.compile(r"^[^.:\s]+\.[^.:\s]+$")
_MEMBER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}:[^.:\s]+\.[^.:\s]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite


class SourceSettings(_Section):
    name: str
    kind: Literal["postgres", "mysql"]
    dsn: str
    password: SecretStr | None = None
    tables: list[str] = Field(min_length=1)
    slot: str | None = None
    publication: str | None = None
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    server_id: int | None = Field(default=None, ge=1, le=2**32 - 1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must start with a letter and hold only letters, digits, '_' or '-'")
        return value

    @field_validator("tables")
    @classmethod
    def _qualified_tables(cls, value: list[str]) -> list[str]:
        for table in value:
            if not _QUALIFIED.match(table):
                raise ValueError(f"{table!r} must be written as 'schema.table'")
        return value

    @field_validator("slot", "publication")
    @classmethod
    def _valid_slot_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLOT.match(value):
            raise ValueError("may hold only lower-case letters, digits and '_' (at most 63)")
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> SourceSettings:
        if self.kind == "mysql" and self.server_id is None:
            raise ValueError("a mysql source needs 'server_id', unique among the server's replicas")
        return self

    @property
    def slot_name(self) -> str:
        return self.slot or "cdc_" + self.name.lower().replace("-", "_")

    @property
    def publication_name(self) -> str:
        return self.publication or "cdc_" + self.name.lower().replace("-", "_")

    @property
    def sync_target_name(self) -> str:
        """The target that writes synced rows into this source: unique per daemon, as its
        positions may share a server with other daemons' (the slot, or the server id)."""
        return f"sync-{self.name}-{self.slot_name if self.kind == 'postgres' else self.server_id}"

    @property
    def qualified_tables(self) -> list[tuple[str, str]]:
        return [tuple(t.split(".", 1)) for t in self.tables]  # type: ignore[misc]


Policy = Literal["last_writer_wins", "source_priority", "field_merge", "manual"]


class TableSettings(_Section):
    match: str
    policy: Policy | None = None  # default: [conflicts] policy
    field_policies: dict[str, Policy] = {}
    repair: Literal["off", "propose", "write"] = "off"  # a lost update's merged row: proposed, or written back
    version_column: str | None = None
    writer_column: str | None = None
    ignore_columns: list[str] = []
    natural_keys: list[list[str]] = []
    status_column: str | None = None
    status_order: list[str] = []

    def matches(self, source: str, schema: str, table: str) -> bool:
        return self.match in (f"{schema}.{table}", f"{source}:{schema}.{table}")


class EntitySettings(_Section):
    """The same business entity held by tables of several sources (``"source:schema.table"``)."""

    name: str
    members: list[str] = Field(min_length=2)
    sync: bool = False  # keep every member equal: changes and resolved rows are written to each
    policy: Policy | None = None  # for divergence between members (default: [conflicts] policy)
    source_priority: list[str] = []  # sources, most trusted first (ties, and fields without an owner)
    owners: dict[str, str] = {}  # field -> the source that owns it (policy "source_priority")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return SourceSettings._valid_name(value)

    @field_validator("members")
    @classmethod
    def _qualified_members(cls, value: list[str]) -> list[str]:
        for member in value:
            if not _MEMBER.match(member):
                raise ValueError(f"{member!r} must be written as 'source:schema.table'")
        sources = [member.split(":", 1)[0] for member in value]
        if len(set(sources)) != len(sources):
            raise ValueError("each member must belong to another source")
        return value

    @property
    def member_tables(self) -> dict[str, tuple[str, str]]:
        """Source name -> (schema, table) of its member table."""
        found = {}
        for member in self.members:
            source, qualified = member.split(":", 1)
            schema, table = qualified.split(".", 1)
            found[source] = (schema, table)
        return found


class ConflictSettings(_Section):
    detect: bool = True
    window_seconds: float = Field(default=600, gt=0)
    policy: Policy = "last_writer_wins"


class TargetSettings(_Section):
    name: str
    kind: Literal["jsonl", "postgres", "mysql"]
    path: Path | None = None
    dsn: str | None = None
    password: SecretStr | None = None
    table_map: dict[str, str] = {}
    column_map: dict[str, dict[str, str]] = {}
    batch_size: int = Field(default=2000, ge=1)
    position_table: str = "cdc.applied_positions"
    # a source column the target table lacks (database targets): stop naming it, add it, or leave it out
    schema_changes: Literal["stop", "add_columns", "ignore"] = "stop"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return SourceSettings._valid_name(value)

    def mapped_table(self, source: str, schema: str, table: str) -> str:
        """The target's "schema.table" for a source table (``table_map``; default: the same)."""
        qualified = f"{schema}.{table}"
        return self.table_map.get(f"{source}:{qualified}") or self.table_map.get(qualified) or qualified

    def mapped_columns(self, source: str, schema: str, table: str) -> dict[str, str]:
        """Source column -> target column renames for a source table (``column_map``)."""
        qualified = f"{schema}.{table}"
        return self.column_map.get(f"{source}:{qualified}") or self.column_map.get(qualified) or {}

    @model_validator(mode="after")
    def _kind_needs(self) -> TargetSettings:
        if self.kind == "jsonl" and self.path is None:
            raise ValueError("a jsonl target needs 'path'")
        if self.kind in ("postgres", "mysql") and not self.dsn:
            raise ValueError(f"a {self.kind} target needs 'dsn'")
        for target_table in [*self.table_map.values(), self.position_table]:
            if not _QUALIFIED.match(target_table):
                raise ValueError(f"{target_table!r} must be written as 'schema.table'")
        return self


class WebhookSettings(_Section):
    url: str  # "https://user:password@host/path": the user-info is sent as HTTP Basic auth
    token: SecretStr | None = None  # sent as "Authorization: Bearer <token>"
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port that is not a number, or out of range
            valid = False
        if not valid:
            raise ValueError("must look like https://host[:port]/path (percent-encode '/', '?', '#', '@' in user-info)")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> WebhookSettings:
        if self.token and urlsplit(self.url).username is not None:
            raise ValueError("give either 'token' or a user:password in 'url', not both")
        return self


class EmailSettings(_Section):
    smtp_host: str
    smtp_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_addr: str = "cdc@localhost"
    to: list[str] = Field(min_length=1)


class AlertSettings(_Section):
    min_severity: Literal["info", "warning", "error", "critical"] = "warning"
    rate_limit_per_minute: int = Field(default=30, ge=1)
    retained_wal_bytes: int = Field(default=2**30, ge=0)  # a slot keeping more WAL than this is alerted
    binlog_purge_headroom_bytes: int = Field(default=0, ge=0)  # alerted when older binlogs are at most this
    webhook: WebhookSettings | None = None
    email: EmailSettings | None = None


class EventLogSettings(_Section):
    retain_days: float = Field(default=7, gt=0)  # events older than this are pruned once every target has them


class HttpSettings(_Section):
    listen: str = "127.0.0.1:9187"  # "host:port"; "" turns the HTTP server off
    token: SecretStr | None = None  # when set, required on every request; needed when listen is not loopback

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        if value and (":" not in value or not value.rpartition(":")[2].isdigit()):
            raise ValueError(f"{value!r} must be written as 'host:port' (or \"\" for no HTTP server)")
        if value and not 1 <= int(value.rpartition(":")[2]) <= 65535:
            raise ValueError(f"{value!r}: the port must be between 1 and 65535")
        return value

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class PipelineSettings(_Section):
    flush_interval_seconds: float = Field(default=0.5, gt=0)
    store_batch: int = Field(default=1000, ge=1)
    backfill_after_ddl: bool = True  # re-read a table whose DDL changed its rows without row events
    on_bad_row: Literal["stop", "hold"] = "stop"  # hold: a change no target can take waits as a bad_row conflict


class RetrySettings(_Section):
    attempts: int = Field(default=0, ge=0, description="0 retries forever (the daemon)")
    initial_seconds: float = Field(default=1.0, gt=0)
    max_seconds: float = Field(default=60.0, gt=0)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    state_dir: Path
    secrets_dir: Path | None = None
    sources: list[SourceSettings] = Field(min_length=1)
    tables: list[TableSettings] = []
    entities: list[EntitySettings] = []
    conflicts: ConflictSettings = ConflictSettings()
    alerts: AlertSettings = AlertSettings()
    targets: list[TargetSettings] = []
    event_log: EventLogSettings = EventLogSettings()
    http: HttpSettings = HttpSettings()
    pipeline: PipelineSettings = PipelineSettings()
    retry: RetrySettings = RetrySettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, items in (("sources", self.sources), ("targets", self.targets)):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind}: name {duplicates[0]!r} is used twice")
        return self

    @model_validator(mode="after")
    def _entities_name_captured_tables(self) -> Settings:
        captured = {(s.name, schema, table) for s in self.sources for schema, table in s.qualified_tables}
        seen: dict[tuple[str, str, str], str] = {}
        for entity in self.entities:
            for source, (schema, table) in entity.member_tables.items():
                if (source, schema, table) not in captured:
                    raise ValueError(
                        f"entities[{entity.name}]: member {source}:{schema}.{table} is not a table"
                        f" of source {source!r}'s 'tables'"
                    )
                if (source, schema, table) in seen:
                    raise ValueError(
                        f"entities[{entity.name}]: {source}:{schema}.{table} already belongs to"
                        f" entity {seen[(source, schema, table)]!r}"
                    )
                seen[(source, schema, table)] = entity.name
            for name in [*entity.source_priority, *entity.owners.values()]:
                if name not in entity.member_tables:
                    raise ValueError(f"entities[{entity.name}]: {name!r} is not the source of one of its members")
        return self

    def entity_of(self, source: str, schema: str, table: str) -> EntitySettings | None:
        for entity in self.entities:
            if entity.member_tables.get(source) == (schema, table):
                return entity
        return None

    def table_settings(self, source: str, schema: str, table: str) -> TableSettings | None:
        for table_settings in self.tables:
            if table_settings.matches(source, schema, table):
                return table_settings
        return None

    def source(self, name: str) -> SourceSettings:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named {name!r} in the configuration")


def config_path(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get("CDC_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: Path, environ: dict[str, str] | None = None) -> Settings:
    """Read, override from the environment, and validate the configuration."""
    environ = dict(os.environ if environ is None else environ)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (give --config FILE or set CDC_CONFIG)") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the configuration file (permission denied)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _apply_env(data, environ)
    _apply_secret_files(data, environ)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc, data)}") from None


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == "CDC_CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path or path[0] not in Settings.model_fields:
            continue
        _set_path(data, path, _env_value(raw), name)


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return raw


def _set_path(node: Any, path: list[str], value: Any, env_name: str) -> None:
    head, rest = path[0], path[1:]
    if isinstance(node, list):
        item = _list_item(node, head)
        if item is None:
            raise ConfigError(f"{env_name}: no list item named or numbered {head!r}")
        if not rest:
            raise ConfigError(f"{env_name}: name a key inside the item, e.g. {env_name}__DSN")
        _set_path(item, rest, value, env_name)
        return
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if child is None:
        child = node[head] = {}
    _set_path(child, rest, value, env_name)


def _list_item(items: list[Any], selector: str) -> dict[str, Any] | None:
    for item in items:
        if isinstance(item, dict) and str(item.get("name", "")).lower() == selector:
            return item
    if selector.isdigit() and int(selector) < len(items) and isinstance(items[int(selector)], dict):
        return items[int(selector)]
    return None


def _apply_secret_files(data: dict[str, Any], environ: dict[str, str]) -> None:
    secrets_dir = data.get("secrets_dir") or environ.get("CREDENTIALS_DIRECTORY")
    if not secrets_dir:
        return
    for section in ("sources", "targets"):
        for item in data.get(section) or []:
            if not isinstance(item, dict) or item.get("password") or not item.get("name"):
                continue
            secret = Path(secrets_dir) / f"{section}.{item['name']}.password"
            if secret.is_file():
                item["password"] = secret.read_text(encoding="utf-8").rstrip("\n")


def _first_error(exc: ValidationError, data: dict[str, Any]) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    key = _format_loc(error["loc"], data)
    message = error["msg"]
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known key (check the spelling; see conf/cdc.toml)"
    message = message.removeprefix("Value error, ")
    return f"{key}: {message}" if key else message


def _format_loc(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            name = (
                node[part].get("name")
                if isinstance(node, list) and part < len(node) and isinstance(node[part], dict)
                else None
            )
            parts[-1:] = [f"{parts[-1] if parts else ''}[{name or part}]"]
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts)
