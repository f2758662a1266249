"""Conflicts: detect overwrites and lost updates in the stream of row versions, and resolve them."""
