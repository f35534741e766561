"""Benchmarks (not product code, not installed: setup.cfg packages only coldmail*). `python -m
tests.bench.compare` runs the shared harness against coldmail and the seed reference side by side;
`profile` samples coldmail's hot paths; `lateness`, `backlog`, `caps` and `batch` measure one thing each
on coldmail's real processes. Their unit tests are the test_*.py beside them."""
