"""cdc's tests: tests/unit need no server; tests/integration run against throwaway servers."""
