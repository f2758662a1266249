"""The state store's tables (SQLite), created when it is opened; later columns come by migration.

A natural key (the key columns ``names`` of a table of a source) is a set, named by a short
``set_id``, and ``natural_key_rows`` says which row (``key``) holds which values (``vals``) of
it, given by which event: a row of a few bytes per held key, which every new row adds.

``meta`` holds the schema version and the store's identity (``installation``, a random UUID,
and ``installation_upgraded``: whether the store is older than identities), which the
targets keep with every position they write.

``table_shapes`` holds the columns of each captured table as last described by its source
(JSON ``[{"name", "type"}]``), with the columns its last schema change added, dropped or
retyped (``reshaped``) and that change's commit time (``reshaped_at``).
"""

# 2: natural keys by set (``natural_key_rows``), migrated from ``natural_keys``. The store's
# identity (meta ``installation``, ``cdc.state.identity``, made on first open) needs no new
# version: an older cdc may still use the store, and the positions it writes without the
# identity are re-applied, never skipped, once this cdc runs again.
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    stored_txn TEXT NOT NULL DEFAULT '',
    stored_seq INTEGER NOT NULL DEFAULT -1,
    complete_txn TEXT NOT NULL DEFAULT '',
    complete_position TEXT,
    complete_resume TEXT,
    acked TEXT,
    acked_at REAL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS row_versions (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (source, schema_name, table_name, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    log_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    commit_ts TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    doc TEXT NOT NULL,
    native TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_position ON events (source, txn_key, seq);
CREATE INDEX IF NOT EXISTS events_by_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_by_row ON events (schema_name, table_name, key);
CREATE INDEX IF NOT EXISTS events_by_time ON events (commit_ts);
CREATE TABLE IF NOT EXISTS conflicts (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    fields TEXT NOT NULL,
    events TEXT NOT NULL,
    rule TEXT NOT NULL,
    evidence TEXT NOT NULL,
    explanation TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    commit_ts TEXT NOT NULL,
    detected_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conflicts_by_time ON conflicts (commit_ts);
CREATE TABLE IF NOT EXISTS natural_key_sets (
    set_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    names TEXT NOT NULL,
    UNIQUE (source, schema_name, table_name, names)
);
CREATE TABLE IF NOT EXISTS natural_key_rows (
    set_id INTEGER NOT NULL,
    vals TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (set_id, vals, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS natural_key_rows_by_row ON natural_key_rows (set_id, key);
CREATE TABLE IF NOT EXISTS held_keys (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (source, schema_name, table_name, key, conflict_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entity_rows (
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (entity, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS table_shapes (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    columns TEXT NOT NULL,
    reshaped TEXT NOT NULL DEFAULT '[]',
    reshaped_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, schema_name, table_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_tables (
    source TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    last_key TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, schema_name, table_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target_positions (
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (target, source)
);
"""
