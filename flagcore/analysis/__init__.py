"""Analysis: pure functions over arrays for diagnostics, remedies, backtests and HIFA statistics."""
