"""vireid test suite."""
