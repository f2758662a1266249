"""Sources: read committed row changes from a database's change stream."""
