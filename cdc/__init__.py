"""cdc: change-data-capture sidecar for CRM databases.

Row changes flow from ``sources`` through the ``pipeline`` (versioning into the
state store) to the ``targets``; positions are acknowledged to a source only after
the state store and every target hold the change.
"""

__version__ = "0.1.0"
