"""Binlog positions: MariaDB GTID lists, MySQL GTID sets and file:pos, and their order.

A resume position is text: ``0-1-42`` or ``0-1-42,1-2-7`` (MariaDB GTID list, one GTID per
domain), ``3E11FA47-71CA-11E1-9E33-C80AA9429562:1-42`` (MySQL GTID set) or
``mysql-bin.000003:1234`` (file and position). The order of transactions is the order of
the binlog: ``txn_key`` is the binlog file's number and the GTID event's offset, padded so
that string order is binlog order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARIADB_GTID = re.compile(r"^\d+-\d+-\d+$")
_FILE_POS = re.compile(r"^(?P<file>[^:]+\.\d+):(?P<pos>\d+)$")


@dataclass(frozen=True, slots=True)
class FilePos:
    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def txn_key(binlog_file: str, offset: int) -> str:
    """Sortable key of the transaction that starts at ``offset`` in ``binlog_file``."""
    return f"{binlog_file_number(binlog_file):010d}:{offset:012d}"


def txn_key_parts(key: str) -> tuple[int, int]:
    """The binlog file number and offset a ``txn_key`` was made of."""
    number, _, offset = key.partition(":")
    return int(number), int(offset)


def binlog_file_number(name: str) -> int:
    _, _, suffix = name.rpartition(".")
    if not suffix.isdigit():
        raise ValueError(f"{name!r} is not a binlog file name (name.000001)")
    return int(suffix)


def kind_of(position: str) -> str:
    """``mariadb_gtid``, ``file_pos`` or ``mysql_gtid``."""
    if all(_MARIADB_GTID.match(part.strip()) for part in position.split(",") if part.strip()):
        return "mariadb_gtid"
    if _FILE_POS.match(position):
        return "file_pos"
    return "mysql_gtid"


def parse_file_pos(position: str) -> FilePos:
    match = _FILE_POS.match(position)
    if not match:
        raise ValueError(f"{position!r} is not a binlog position (file.000001:1234)")
    return FilePos(match["file"], int(match["pos"]))


def mariadb_gtids(position: str) -> dict[int, str]:
    """The GTID of each domain in a MariaDB GTID list."""
    gtids: dict[int, str] = {}
    for part in position.split(","):
        part = part.strip()
        if part:
            if not _MARIADB_GTID.match(part):
                raise ValueError(f"{part!r} is not a MariaDB GTID (domain-server-sequence)")
            gtids[int(part.split("-", 1)[0])] = part
    return gtids


def mariadb_position(gtids: dict[int, str]) -> str:
    return ",".join(gtids[domain] for domain in sorted(gtids))
