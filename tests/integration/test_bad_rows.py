"""Changes that cannot be stored: one line and exit 3, nothing lost; or, with ``on_bad_row = "hold"``,
a pending ``bad_row`` conflict that a person releases. Also a full state store, and JSON nested
deeper than Python's default recursion allows."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys

from tests.helpers import PROJECT, CdcSetup, table_rows, wait_for

SOURCE = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, doc jsonb);"
NARROW_TARGET = "CREATE TABLE public.customers (id bigint PRIMARY KEY, name varchar(5), doc jsonb);"
HOLD = {"CDC_PIPELINE__ON_BAD_ROW": "hold"}


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return (result.stdout + result.stderr).splitlines()


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    found = []
    for line in _lines(result):
        try:
            record = json.loads(line)
        except ValueError:
            found.append(line)  # not a log line: what cdc printed on stderr
            continue
        if record.get("level") in ("error", "critical"):
            found.append(record["msg"])
    return found


def test_a_change_a_target_cannot_take_stops_in_one_line_naming_it(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SOURCE, ["public.customers"], target_sql=NARROW_TARGET)
    setup.setup()
    with setup.source() as conn:
        conn.execute("INSERT INTO public.customers (id, name) VALUES (1, 'ann'), (2, 'bartholomew'), (3, 'cy')")
    result = setup.cdc("run", "--drain")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = _errors(result)
    assert len(errors) == 1, errors
    message = errors[0]
    for part in ("target dwh", "public.customers", '{"id":2}', "source crm", "on_bad_row"):
        assert part in message, message
    with setup.target() as conn:  # nothing of the refused batch's transaction is half-written
        assert table_rows(conn, "public.customers") in ([], [(1, "ann", None)])
    with setup.target() as conn:
        conn.execute("ALTER TABLE public.customers ALTER COLUMN name TYPE text")
    setup.drain()  # the cause fixed, the stream goes on from where it stopped
    with setup.source() as src, setup.target() as dst:
        assert table_rows(dst, "public.customers") == table_rows(src, "public.customers")


def test_on_bad_row_hold_holds_the_key_streams_on_and_a_resolution_releases_it(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SOURCE, ["public.customers"], target_sql=NARROW_TARGET)
    setup.setup()
    with setup.source() as conn:
        conn.execute("INSERT INTO public.customers (id, name) VALUES (1, 'ann'), (2, 'bartholomew'), (3, 'cy')")
        conn.execute("UPDATE public.customers SET name = 'bo' WHERE id = 2")  # a later change of the held key
        conn.execute("INSERT INTO public.customers (id, name) VALUES (4, 'dee')")
    result = setup.cdc("run", "--drain", **HOLD)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    with setup.target() as conn:
        assert table_rows(conn, "public.customers") == [(1, "ann", None), (3, "cy", None), (4, "dee", None)]
    listed = setup.cdc("conflicts", "list", "--type", "bad_row", "--json")
    assert listed.returncode == 0, listed.stderr
    conflicts = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(c["type"], c["status"], c["severity"], c["key"]) for c in conflicts] == [
        ("bad_row", "pending", "error", '{"id":2}')
    ]
    explanation = conflicts[0]["explanation"]
    assert "public.customers" in explanation and "cdc conflicts resolve" in explanation, explanation
    status = setup.cdc("status", "--json")
    assert status.returncode == 0 and '"bad_row"' in status.stdout, status.stdout

    with setup.target() as conn:
        conn.execute("ALTER TABLE public.customers ALTER COLUMN name TYPE text")
    resolved = setup.cdc("conflicts", "resolve", conflicts[0]["id"], "--row", '{"id": 2, "name": "bo", "doc": null}')
    assert resolved.returncode == 0, resolved.stderr
    with setup.source() as conn:
        conn.execute("UPDATE public.customers SET name = 'bob' WHERE id = 2")  # released: flows again
    assert setup.cdc("run", "--drain", **HOLD).returncode == 0
    with setup.source() as src, setup.target() as dst:
        assert table_rows(dst, "public.customers") == table_rows(src, "public.customers")


def test_a_full_state_store_stops_in_one_line_and_loses_nothing(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SOURCE, ["public.customers"])
    setup.setup()
    setup.drain()  # the state store exists
    with setup.source() as conn:
        conn.execute(
            "INSERT INTO public.customers (id, name) SELECT i, repeat(md5(i::text), 40) FROM generate_series(1, 3000) i"
        )
    largest = max(path.stat().st_size for path in setup.state_dir.iterdir())
    limit = largest + 256 * 1024  # the transaction's 3.8 MB of events cannot fit: as if the disk were full

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        [sys.executable, "-m", "cdc", "run", "--drain"],
        env=setup.env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
        preexec_fn=small_files,
    )
    assert full.returncode == 3, full.stdout[-3000:] + full.stderr[-3000:]
    assert "Traceback" not in full.stdout + full.stderr
    errors = _errors(full)
    assert len(errors) == 1 and "state store" in errors[0] and "free space" in errors[0], errors
    setup.drain()  # with room again, nothing is missing
    with setup.source() as src, setup.target() as dst:
        assert table_rows(dst, "public.customers") == table_rows(src, "public.customers")
    assert len([e for e in setup.events() if e["op"] == "insert"]) == 3000


def test_json_nested_thousands_deep_is_stored_exactly_and_shown(pg_server, tmp_path):
    setup = CdcSetup(pg_server, tmp_path, SOURCE, ["public.customers"])
    setup.setup()
    deep = "[" * 3000 + "1" + "]" * 3000
    with setup.source() as conn:
        conn.execute("INSERT INTO public.customers (id, name, doc) VALUES (1, 'deep', %s::jsonb)", (deep,))
    result = setup.drain()
    assert "Traceback" not in result.stdout + result.stderr
    as_text = "SELECT t::text FROM public.customers t ORDER BY id"  # not loaded into Python values here
    with setup.source() as src, setup.target() as dst:
        assert dst.execute(as_text).fetchall() == src.execute(as_text).fetchall()
    shown = setup.cdc("events", "--json")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
    assert deep.replace(" ", "") in shown.stdout.replace(" ", "")
    listed = setup.cdc("events")  # for a person: each event read back from its document
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert "public.customers" in listed.stdout and "insert" in listed.stdout


def test_an_http_port_in_use_leaves_the_stream_running_with_a_warning(pg_server, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    setup = CdcSetup(
        pg_server, tmp_path, SOURCE, ["public.customers"], extra_config=f'[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    setup.setup()
    with setup.source() as conn:
        conn.execute("INSERT INTO public.customers (id, name) VALUES (1, 'ann')")
    with setup.running():
        wait_for(lambda: table_rows(setup.target(), "public.customers") == [(1, "ann", None)], what="the row")
    taken.close()
    log = setup.daemon_log()
    assert "cannot listen" in log and "Traceback" not in log, log[-3000:]
