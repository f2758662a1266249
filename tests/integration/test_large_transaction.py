"""A large transaction streams through in bounded memory: ten times the rows, not ten times the memory."""

from __future__ import annotations

import sys

from tests.helpers import CdcSetup, sample_peak_rss

SCHEMA = "CREATE TABLE public.events (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric);"


def _peak_rss_kib(crm: CdcSetup) -> int:
    """Run ``cdc run --drain`` and sample its resident memory until it exits."""
    code, output, peak = sample_peak_rss([sys.executable, "-m", "cdc", "run", "--drain"], crm.env())
    assert code == 0, output[-3000:]
    return peak


def _one_transaction(crm: CdcSetup, first: int, rows: int) -> None:
    with crm.source() as conn:
        conn.execute(
            "INSERT INTO events SELECT i, repeat(md5(i::text), 8), i * 1.25 FROM generate_series(%s::int, %s::int) i",
            (first, first + rows - 1),
        )


def test_memory_does_not_grow_with_transaction_size(pg_server, tmp_path):
    crm = CdcSetup(pg_server, tmp_path, SCHEMA, ["public.events"], extra_config='[log]\nlevel = "warning"\n')
    crm.setup()
    _one_transaction(crm, 1, 20_000)
    small = _peak_rss_kib(crm)
    _one_transaction(crm, 20_001, 200_000)
    large = _peak_rss_kib(crm)
    with crm.source() as src, crm.target() as dst:
        assert dst.execute("SELECT count(*) FROM events").fetchone()[0] == 220_000
        query = "SELECT md5(string_agg(e::text, '|' ORDER BY id)) FROM events e"
        assert src.execute(query).fetchone() == dst.execute(query).fetchone()
    # 200,000 rows of ~300 bytes would be 60 MB as text alone and several times that as
    # Python objects; the daemon's peak may differ only by allocator noise.
    assert large < small * 1.25 + 16_384, f"peak RSS {small} KiB for 20k rows, {large} KiB for 200k rows"


def test_a_million_row_transaction_streams_through_within_150_mb(pg_server, tmp_path):
    crm = CdcSetup(
        pg_server,
        tmp_path,
        "CREATE TABLE public.bulk (id bigint PRIMARY KEY, a int, b text);",
        ["public.bulk"],
        extra_config='[log]\nlevel = "warning"\n',
    )
    crm.setup()
    with crm.source() as conn:
        conn.execute("INSERT INTO bulk SELECT i, i % 1000, md5(i::text) FROM generate_series(1, 1000000) i")
    peak = _peak_rss_kib(crm)
    with crm.source() as src, crm.target() as dst:
        query = "SELECT count(*), sum(a), md5(string_agg(b, '' ORDER BY id)) FROM bulk"
        assert dst.execute(query).fetchone() == src.execute(query).fetchone()
    assert peak < 150 * 1024, f"peak RSS {peak} KiB while a 1,000,000-row transaction streamed through"
