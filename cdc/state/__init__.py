"""The state store: source positions, per-row versions and the event log."""

from cdc.state.store import SourceState, StateStore, StateStoreError

__all__ = ["SourceState", "StateStore", "StateStoreError"]
