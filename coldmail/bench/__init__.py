"""Benchmark tooling (not product code): run the shared harness against coldmail and the seed
reference side by side (`python -m coldmail.bench.compare`) and profile coldmail's hot paths
(`python -m coldmail.bench.profile`)."""
