"""Benchmarks: each figure measured beside a same-run baseline on the same machine (`python -m bench.run`)."""

import os

# The services default to production (which refuses the development token); benchmarks run them in process
# and as children (which inherit this) on a development footing, said explicitly.
os.environ.setdefault("HANDOFF_ENV", "development")
