"""Benchmarks: each figure measured beside a same-run baseline on the same machine (`python -m bench.run`)."""
