"""PostgreSQL text-form values to Python values, with psycopg's own loaders.

The replication connection runs with ``DateStyle=ISO``, ``TimeZone=UTC``,
``IntervalStyle=iso_8601`` and ``extra_float_digits=3`` so that the text form is exact
and unambiguous. Intervals stay in that ISO-8601 text (a ``timedelta`` cannot hold
months); json/jsonb stay JSON text; values a loader cannot represent (``infinity``
timestamps, years past 9999) and types psycopg does not know (enums, domains of
extensions) stay text too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import DataError
from psycopg.adapt import Transformer
from psycopg.pq import Format

from cdc.values import RawJson, Verbatim

# OIDs of built-in types handled specially (pg_type.dat)
_JSON_OIDS = {114, 3802}
_VERBATIM_OIDS = {1186}  # interval
_TEXT_LIKE_OIDS = {25, 1043, 1042, 19, 18}  # text, varchar, bpchar, name, char

Loader = Callable[[bytes], Any]


class ValueDecoder:
    """Turns (type oid, text bytes) into Python values; caches one loader per type."""

    def __init__(self) -> None:
        self._transformer = Transformer()
        self._loaders: dict[int, Loader] = {}

    def loader(self, type_oid: int) -> Loader:
        try:
            return self._loaders[type_oid]
        except KeyError:
            pass
        load = self._make_loader(type_oid)
        self._loaders[type_oid] = load
        return load

    def decode(self, type_oid: int, data: bytes) -> Any:
        return self.loader(type_oid)(data)

    def _make_loader(self, type_oid: int) -> Loader:
        if type_oid in _JSON_OIDS:
            return lambda data: RawJson(bytes(data).decode("utf-8"))
        if type_oid in _TEXT_LIKE_OIDS:
            return lambda data: bytes(data).decode("utf-8")
        if type_oid in _VERBATIM_OIDS:
            return lambda data: Verbatim(bytes(data).decode("utf-8"))
        adapters = self._transformer.adapters
        if adapters.get_loader(type_oid, Format.TEXT) is None:
            return lambda data: Verbatim(bytes(data).decode("utf-8"))
        psycopg_load = self._transformer.get_loader(type_oid, Format.TEXT).load

        def load(data: bytes) -> Any:
            try:
                return psycopg_load(data)
            except (DataError, ValueError, OverflowError):
                return Verbatim(bytes(data).decode("utf-8"))

        return load
