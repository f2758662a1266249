"""Tools for cdc's tests, demo and benchmarks; not part of the cdc package."""
