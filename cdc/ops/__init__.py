"""The DBA verbs' logic: snapshot, backfill and replay."""
