#!/usr/bin/env python3
"""Start throwaway PostgreSQL and/or MariaDB servers for trying cdc by hand.

Prints their DSNs and client command lines, keeps running until Ctrl-C or
SIGTERM, then stops the servers and deletes their temp dirs.

    .venv/bin/python scripts/servers.py              # both
    .venv/bin/python scripts/servers.py --postgres --port-pg 55432
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devtools.servers import ThrowawayMariaDB, ThrowawayPostgres


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--postgres", action="store_const", const="postgres", dest="which", help="PostgreSQL only")
    which.add_argument("--mariadb", action="store_const", const="mariadb", dest="which", help="MariaDB only")
    which.add_argument("--both", action="store_const", const="both", dest="which", help="both (the default)")
    parser.add_argument("--port-pg", type=int, help="PostgreSQL port (default: a free one)")
    parser.add_argument("--port-mariadb", type=int, help="MariaDB port (default: a free one)")
    parser.set_defaults(which="both")
    return parser.parse_args(argv)


def describe(server: ThrowawayPostgres | ThrowawayMariaDB) -> str:
    if isinstance(server, ThrowawayPostgres):
        return (
            f"PostgreSQL  {server.dsn()}\n"
            f"  connect:  psql '{server.dsn()}'\n"
            f"  datadir:  {server.datadir}\n"
            f"  log:      {server.log_path}"
        )
    return (
        f"MariaDB     {server.dsn()}\n"
        f"  connect:  mariadb -h {server.host} -P {server.port} -u {server.user}\n"
        f"  datadir:  {server.datadir}\n"
        f"  log:      {server.log_path}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handle both signals the same way, so that a signal arriving while a server is
    # still starting up does not abort halfway; we stop everything afterwards.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: list[ThrowawayPostgres | ThrowawayMariaDB] = []
    if args.which in ("postgres", "both"):
        servers.append(ThrowawayPostgres(port=args.port_pg))
    if args.which in ("mariadb", "both"):
        servers.append(ThrowawayMariaDB(port=args.port_mariadb))
    try:
        for server in servers:
            if stop.is_set():
                break
            print(f"starting {server.kind} ...", flush=True)
            server.start()
            print(describe(server), flush=True)
        if not stop.is_set():
            print("\nrunning; press Ctrl-C (or send SIGTERM) to stop and delete the servers", flush=True)
            while not stop.wait(1.0):
                pass
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        for server in reversed(servers):
            server.stop()
        print("stopped; temp dirs removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
