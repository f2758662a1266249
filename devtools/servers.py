"""Throwaway PostgreSQL and MariaDB servers in temp dirs, for the tests, the demo and trying cdc by hand.

Each server gets a fresh directory under /tmp, listens on 127.0.0.1 on a free
port, and is configured for change data capture (logical decoding for
PostgreSQL, a full row-based binlog with GTIDs for MariaDB).  ``stop()`` shuts
it down and deletes the directory::

    with ThrowawayPostgres() as pg:
        print(pg.dsn())            # postgresql://postgres@127.0.0.1:PORT/postgres

    with ThrowawayMariaDB() as mdb:
        print(mdb.dsn("crm"))      # mysql://root@127.0.0.1:PORT/crm

Servers refuse to run as root, so when we are root they run as an unprivileged
system account ("postgres" or "mysql", falling back to "nobody").

Why this module is long: it runs two servers, PostgreSQL and MariaDB, through the same life
cycle (initialise, start as an unprivileged user, wait, restart, stop, clean up).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import psycopg
import pymysql

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds until a server must accept connections
STOP_TIMEOUT = 30.0  # seconds a graceful shutdown may take before SIGKILL
PORT_ATTEMPTS = 5  # fresh ports to try when the chosen one gets taken meanwhile
SETTINGS = Mapping[str, Any]
# For initdb and mariadb-install-db: output captured for error messages, and a
# session of their own so that a Ctrl-C in the terminal reaches only us.
_QUIET_CHILD: dict[str, Any] = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.PIPE,
    "stderr": subprocess.STDOUT,
    "text": True,
    "start_new_session": True,
}


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _PortTaken(RuntimeError):
    """The server could not bind its port (someone grabbed it after free_port())."""


def _service_account(preferred: str) -> pwd.struct_passwd | None:
    """The account a server must run as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root, but neither user {preferred!r} nor 'nobody' exists")


def _as_account(argv: list[str], account: pwd.struct_passwd | None) -> tuple[list[str], dict[str, Any]]:
    """``argv`` and extra Popen arguments that run ``argv`` as ``account``.

    Uses setpriv (which execs, so the child pid is the server itself and
    signals reach it directly); without setpriv, Popen's own user switching.
    """
    if account is None:
        return argv, {}
    setpriv = shutil.which("setpriv")
    if setpriv:
        switch = [setpriv, f"--reuid={account.pw_name}", f"--regid={account.pw_gid}", "--init-groups", "--"]
        return switch + argv, {}
    groups = os.getgrouplist(account.pw_name, account.pw_gid)
    return argv, {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": groups}


def _find_binary(names: list[str], dirs: list[str], package: str) -> str:
    """The first of ``names`` found in ``dirs`` or on PATH, else a RuntimeError naming ``package``."""
    for name in names:
        for directory in dirs:
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        f"cannot find {' or '.join(names)} (looked in {', '.join(dirs) or 'nowhere'} and PATH); "
        f"install the Debian package '{package}' (apt-get install {package})"
    )


def _pg_bindirs() -> list[str]:
    """Where PostgreSQL server binaries may live, best guess first."""
    dirs: list[str] = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        dirs.append(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass

    def version(bindir: str) -> int:
        name = Path(bindir).parent.name
        return int(name) if name.isdigit() else 0

    # The project targets PostgreSQL 15: prefer it, then the newest other version.
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: (version(d) != 15, -version(d)))
    return dirs + versioned


def _tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``offset`` ("" if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _ThrowawayServer:
    """Lifecycle shared by both servers: temp dir, start with port retries, stop, restart."""

    host: str = HOST
    kind = "server"  # used in temp dir names and messages
    account_name = "nobody"  # who runs the server when we are root
    stop_signal = signal.SIGTERM

    def __init__(self, port: int | None = None, settings: SETTINGS | None = None) -> None:
        self.port: int = port or 0
        self.settings: dict[str, Any] = dict(settings or {})
        self.tmpdir: Path | None = None
        self._fixed_port = port is not None
        self._account: pwd.struct_passwd | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offsets: dict[Path, int] = {}
        self._last_error = ""  # why the last readiness probe failed

    # -- hooks for subclasses --------------------------------------------
    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def log_paths(self) -> list[Path]:
        """Files to quote when startup fails."""
        return [self.log_path]

    def _init_datadir(self) -> None:
        raise NotImplementedError

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _accepts_connections(self) -> bool:
        raise NotImplementedError

    # -- public lifecycle -------------------------------------------------
    @property
    def datadir(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError(f"{self.kind} server is not started")
        return self.tmpdir / "data"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Create a fresh data directory and start the server on it."""
        if self.tmpdir is not None:
            raise RuntimeError(f"{self.kind} server already started in {self.tmpdir}")
        self._account = _service_account(self.account_name)
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"cdc-{self.kind}-", dir="/tmp"))
        try:
            os.chmod(self.tmpdir, 0o755)
            if self._account is not None:
                os.chown(self.tmpdir, self._account.pw_uid, self._account.pw_gid)
            self._init_datadir()
            self._launch_on_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """Stop and start the server again on the same data directory and port."""
        if self.tmpdir is None:
            raise RuntimeError(f"{self.kind} server is not started")
        self._shutdown()
        try:
            self._launch()
        except BaseException:
            self._kill()
            raise

    def stop(self) -> None:
        """Shut the server down and delete its temp dir; safe to call any number of times."""
        try:
            self._shutdown()
        finally:
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None

    def __enter__(self) -> Self:
        if self.tmpdir is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------
    def _launch_on_free_port(self) -> None:
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            try:
                self._launch()
                return
            except _PortTaken:
                if attempt == attempts - 1:
                    raise

    def _launch(self) -> None:
        """Start the server process and wait until it accepts connections."""
        self._log_offsets = {path: _size(path) for path in self.log_paths}
        self._proc = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self._proc.poll()
            if code is not None:
                self._kill()  # reap leftovers in its process group
                logs = self._startup_logs()
                if "Address already in use" in logs:
                    raise _PortTaken(f"{self.kind} server could not listen on port {self.port} (in use):\n{logs}")
                raise RuntimeError(f"{self.kind} server exited with code {code} during startup:\n{logs}")
            if self._accepts_connections():
                return
            if time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(
                    f"{self.kind} server did not accept connections on port {self.port} within "
                    f"{START_TIMEOUT:.0f}s (last error: {self._last_error or 'none'}):\n{self._startup_logs()}"
                )
            time.sleep(0.1)

    def _startup_logs(self) -> str:
        """What the server logged since the last launch, for error messages."""
        parts = []
        for path in self.log_paths:
            text = _tail(path, self._log_offsets.get(path, 0))
            if text:
                parts.append(f"--- {path}:\n{text}")
        return "\n".join(parts) or f"(nothing in {', '.join(map(str, self.log_paths))})"

    def _shutdown(self) -> None:
        """Graceful stop of the server process, SIGKILL if it takes too long."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(self.stop_signal)
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._kill()

    def _kill(self) -> None:
        """SIGKILL the server and everything in its process group, then forget it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        try:  # children (e.g. PostgreSQL backends) that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _popen(self, argv: list[str], output: Path, switch_user: bool = True) -> subprocess.Popen[bytes]:
        """Start a server binary in its own session (as the service account unless told
        otherwise), with stdout and stderr appended to ``output``."""
        extra: dict[str, Any] = {}
        if switch_user:
            argv, extra = _as_account(argv, self._account)
        with open(output, "ab") as out:
            if self._account is not None:
                os.chown(output, self._account.pw_uid, self._account.pw_gid)
            return subprocess.Popen(
                argv,
                cwd=self.tmpdir,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **extra,
            )

    def _is_ours(self, reported_datadir: str) -> bool:
        """Whether a server that answered on our port serves our data directory
        (and not someone else's that grabbed the port first)."""
        return os.path.realpath(reported_datadir.rstrip("/")) == os.path.realpath(self.datadir)


class ThrowawayPostgres(_ThrowawayServer):
    """A PostgreSQL server (``wal_level=logical``) in a temp dir, trust auth on 127.0.0.1."""

    kind = "postgres"
    account_name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

    def __init__(self, port: int | None = None, settings: SETTINGS | None = None, superuser: str = "postgres") -> None:
        super().__init__(port, settings)
        self.superuser = superuser
        self.bindir = os.path.dirname(_find_binary(["initdb"], _pg_bindirs(), "postgresql"))

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """libpq URI, e.g. ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        user = quote(user or self.superuser, safe="")
        return f"postgresql://{user}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "postgresql.log"

    def server_settings(self) -> dict[str, Any]:
        """What goes into postgresql.conf on top of the initdb defaults."""
        assert self.tmpdir is not None
        return {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.tmpdir),
            "wal_level": "logical",
            "max_replication_slots": 40,
            "max_wal_senders": 40,
            "synchronous_commit": "on",
            "shared_buffers": "128MB",
            "max_connections": 100,
            "logging_collector": "off",
            "log_destination": "stderr",
            **self.settings,
        }

    def _init_datadir(self) -> None:
        base = [
            os.path.join(self.bindir, "initdb"),
            f"--pgdata={self.datadir}",
            "--auth=trust",
            f"--username={self.superuser}",
            "--encoding=UTF8",
        ]
        result = self._initdb(base + ["--locale=C.UTF-8"])
        if result.returncode != 0 and "locale" in result.stdout.lower():
            shutil.rmtree(self.datadir, ignore_errors=True)
            result = self._initdb(base + ["--no-locale"])
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed with code {result.returncode}:\n{result.stdout}")
        lines = [f"\n# added by {__name__}"]
        for key, value in self.server_settings().items():
            quoted = str(value).replace("'", "''")
            lines.append(f"{key} = '{quoted}'")
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n".join(lines) + "\n")

    def _initdb(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        argv, extra = _as_account(argv, self._account)
        return subprocess.run(argv, cwd=self.tmpdir, **_QUIET_CHILD, **extra)

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [os.path.join(self.bindir, "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        return self._popen(argv, self.log_path)

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError as exc:
            self._last_error = str(exc).strip()
            return False
        return row is not None and self._is_ours(row[0])


class ThrowawayMariaDB(_ThrowawayServer):
    """A MariaDB server (row-based binlog with full images and GTIDs) in a temp dir; root has no password."""

    kind = "mariadb"
    account_name = "mysql"
    stop_signal = signal.SIGTERM  # normal shutdown
    user = "root"

    def __init__(self, port: int | None = None, settings: SETTINGS | None = None) -> None:
        super().__init__(port, settings)
        sbin = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin"]
        self.install_db = _find_binary(["mariadb-install-db", "mysql_install_db"], sbin, "mariadb-server")
        self.mariadbd = _find_binary(["mariadbd", "mysqld"], sbin, "mariadb-server")

    def dsn(self, dbname: str = "") -> str:
        """URI like ``mysql://root@127.0.0.1:PORT/DB`` (DB may be empty)."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def socket_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "mysqld.sock"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "error.log"

    @property
    def log_paths(self) -> list[Path]:
        # Option errors go to stdout/stderr: mariadbd opens --log-error only later.
        return [self.log_path, self._output_path]

    @property
    def _output_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "mariadbd.out"

    def server_options(self) -> list[str]:
        """Command-line options for mariadbd (extra settings last, so they win)."""
        assert self.tmpdir is not None
        options = [
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.tmpdir / 'mysqld.pid'}",
            f"--log-error={self.log_path}",
            "--server-id=1",
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--gtid-strict-mode=1",
            "--log-slave-updates=1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=200",
        ]
        if self._account is not None:
            options.insert(1, f"--user={self._account.pw_name}")
        options += [f"--{key.replace('_', '-')}={value}" for key, value in self.settings.items()]
        return options

    def _init_datadir(self) -> None:
        argv = [
            self.install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if self._account is not None:
            argv.append(f"--user={self._account.pw_name}")
        result = subprocess.run(argv, cwd=self.tmpdir, **_QUIET_CHILD)
        if result.returncode != 0:
            name = os.path.basename(self.install_db)
            raise RuntimeError(f"{name} failed with code {result.returncode}:\n{result.stdout}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self.tmpdir is not None
        # mariadbd switches to --user by itself; the error log is written by mariadbd.
        argv = [self.mariadbd, *self.server_options()]
        return self._popen(argv, self._output_path, switch_user=False)

    def _accepts_connections(self) -> bool:
        try:
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password="",
                connect_timeout=2,
                read_timeout=2,
                write_timeout=2,
            )
        except pymysql.err.OperationalError as exc:
            self._last_error = str(exc)
            return False
        with conn, conn.cursor() as cur:
            cur.execute("SELECT @@datadir")
            row = cur.fetchone()
        return row is not None and self._is_ours(row[0])
