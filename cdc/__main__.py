"""Entry point for ``python -m cdc``."""

from cdc.cli import main

raise SystemExit(main())
