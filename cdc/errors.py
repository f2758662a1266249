"""cdc's exceptions, the whole tree on one page, and the exit codes of the command line.

Every error cdc raises on purpose is a ``CdcError`` whose text is one line saying what is
wrong and what to do. ``fatal`` marks an error that retrying cannot cure (a missing slot, a
table without a primary key, a value a target cannot store): the daemon stops on it, while
it retries the others (a lost connection) with backoff. The command line maps an error to
its exit code in one place (``cdc.cli.common.exit_code_of``).

    CdcError
     +-- ConfigError          the configuration file or environment is invalid (exit 2)
     +-- DsnError             a DSN cannot be parsed (exit 2)
     +-- SourceError          a source failed (exit 3 when fatal, else 4)
     |    +-- StreamDecodeError   the replication stream holds what cdc cannot read
     |         +-- ProtocolError    a replication CopyData frame is malformed or of an unknown kind
     |         +-- DecodeError      a pgoutput message is malformed or unsupported
     +-- TargetError          a target failed (exit 3 when fatal, else 4)
     |    +-- BadRowError         a target cannot take one change (held with on_bad_row = "hold")
     +-- ConversionError      a value does not fit a target column (a fatal TargetError follows)
     +-- StateStoreError      the state store cannot be opened or is of another version (exit 3)
     +-- Unreachable          a server stayed unreachable for every retry (exit 4)
     +-- SnapshotError        a snapshot cannot be taken (exit 3)
     +-- ReplayError          a replay cannot start (exit 2)
     +-- ReviewError          a conflict cannot be resolved as asked (exit 1)
     +-- CommandError         a verb's own error, with the exit code it chose
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit codes of ``cdc``; scripts and systemd units rely on them."""

    OK = 0
    PROBLEMS = 1  # check found problems; a replayed row failed; a conflict not found or not resolvable
    USAGE = 2  # bad configuration, arguments or DSN
    FATAL = 3  # needs a person: a missing slot, a table without a primary key, ...
    UNREACHABLE = 4  # a server stayed unreachable for every retry
    NOT_DRAINED = 5  # run --drain was stopped before the sources' end position was reached
    INTERRUPTED = 130  # Ctrl-C


class CdcError(Exception):
    """The root of cdc's errors: a one-line message and whether retrying can cure it."""

    fatal: bool = False

    def __init__(self, message: str, fatal: bool | None = None) -> None:
        super().__init__(message)
        if fatal is not None:
            self.fatal = fatal


class ConfigError(CdcError):
    """The configuration is invalid; the message names the key and what is wrong with it."""

    fatal = True


class DsnError(CdcError, ValueError):
    """A DSN cannot be parsed; the message never repeats the DSN (it may hold a password)."""

    fatal = True


class SourceError(CdcError):
    """A source failed. Fatal errors need a person (a missing slot, a table without a key);
    the others (a lost connection) are retried with backoff."""


class StreamDecodeError(SourceError, ValueError):
    """A replication message cannot be decoded (a malformed or unknown frame or message)."""

    fatal = True


class ProtocolError(StreamDecodeError):
    """A replication CopyData message is malformed or of an unknown kind."""


class DecodeError(StreamDecodeError):
    """A pgoutput message is malformed, truncated, or of a kind cdc does not read."""


class TargetError(CdcError):
    """A target cannot be reached or refused a change; the message names the target. Fatal
    errors (a missing table or column, a value the target cannot store) stop the daemon."""


class BadRowError(TargetError):
    """A target cannot take one change: a value it cannot store, a row its constraints refuse.
    Retrying cannot help; with ``[pipeline] on_bad_row = "hold"`` the change waits as a
    ``bad_row`` conflict. ``event_id`` names the change when the target knows which one."""

    fatal = True

    def __init__(self, message: str, event_id: str | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.column = column


class ConversionError(CdcError, ValueError):
    """An event's value cannot be stored in a target column of that type; ``column`` names
    the column once it is known."""

    fatal = True

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class StateStoreError(CdcError):
    """The state store cannot be opened, is locked, or was written by another version."""

    fatal = True


class Unreachable(CdcError):
    """A server stayed unreachable for every retry; the message names it and the last error."""


class SnapshotError(CdcError):
    """The snapshot cannot be taken; the message says why and what to do."""

    fatal = True


class ReplayError(CdcError):
    """The replay cannot start (unknown target, a target kind that cannot be replayed into)."""

    fatal = True


class ReviewError(CdcError):
    """A conflict cannot be resolved as asked (unknown id, already resolved, bad row)."""


class CommandError(CdcError):
    """A verb's own error, with the exit code it calls for."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message, fatal=exit_code == ExitCode.FATAL)
        self.exit_code = exit_code
